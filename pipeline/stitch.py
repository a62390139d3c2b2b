"""The stitch: finished blocks -> mask.tif and confidence.tif (COGs) and survey.json.

A ``Stitcher`` takes blocks in any order. Started before the inference (``follow``), it follows
the block store and writes each block into both layers as soon as it lands there, its COG tiles
compressed by a pool of threads, so the COGs are encoded while later blocks are still inferred,
by whatever ran them (this process, Prefect's threads or Dask workers). ``finish`` then only waits
for the last blocks and lays the files out. Blocks another process inferred (or a killed run left)
are read from the store and checked (a file changed on disk is one line, not a wrong mask); blocks
this process inferred while the stitch was open come in memory (``BlockStore.hand_over``), the
arrays that were saved, with nothing to read back. The files are the same bytes whatever order
the blocks came in and whichever way they came (tested).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from types import TracebackType

import numpy as np
import rasterio
import torch

import pipeline
from pipeline.class_ids import NO_CLASS
from pipeline.errors import MsafError
from pipeline.fsutil import disk_error
from pipeline.inference.blend import CONFIDENCE_NODATA, BlockResult
from pipeline.inference.blockstore import BlockStore, CorruptBlock
from pipeline.inference.device import resolve_device, resolve_precision
from pipeline.raster.buffers import small_pages
from pipeline.raster.cog import GeoTiffSink
from pipeline.styles import mask_colormap
from pipeline.survey import PreparedSurvey, peak_rss_mb
from pipeline.survey_folder import SurveyFolder, retire_report
from pipeline.survey_record import (
    AreaRecord,
    CollarRecord,
    InputRecord,
    ModelRecord,
    SurveyRecord,
    ThroughputRecord,
    TilingRecord,
    TimingRecord,
)
from pipeline.timestamps import creation_time


class Stitcher:
    """The two COG layers of one survey, written block by block; a context manager that drops
    everything half-written when the survey fails or is stopped.

    Args:
        prepared: the validated survey.
        poll_s: how often ``follow`` looks for new blocks in the store.
    """

    HAND_OVER_BLOCKS = 2  # blocks this process inferred held for the stitch at most; the rest wait on disk

    def __init__(self, prepared: PreparedSurvey, poll_s: float = 0.05) -> None:
        self.prepared = prepared
        self.poll_s = poll_s
        self.store: BlockStore = prepared.store
        info, meta = prepared.info, prepared.meta
        self._compressors = ThreadPoolExecutor(prepared.cfg.reader_threads, thread_name_prefix="deflate")
        self._layers = ThreadPoolExecutor(2, thread_name_prefix="stitch")
        folder = SurveyFolder(prepared.out_dir)
        self.mask = GeoTiffSink(
            folder.mask,
            info.width,
            info.height,
            info.crs,
            info.transform,
            NO_CLASS,
            colormap=mask_colormap(meta.class_names),
            categories=meta.class_names,
            description="class id (255 = nodata)",
            pool=self._compressors,
        )
        self.confidence = GeoTiffSink(
            folder.confidence,
            info.width,
            info.height,
            info.crs,
            info.transform,
            CONFIDENCE_NODATA,
            pool=self._compressors,
        )
        self.counts = np.zeros(len(meta.classes), np.int64)
        self.added: set[int] = set()
        self._writes: list[Future[None]] = []  # the last block's two layer writes
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._done = False

    def __enter__(self) -> Stitcher:
        self._pages = small_pages()  # the layers' tiles and overviews too (``pipeline.raster.buffers``)
        self._pages.__enter__()
        self._hand_over = self.store.hand_over(self.HAND_OVER_BLOCKS)  # this process's blocks come in memory
        self._hand_over.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop_following()
        if not self._done:  # failed or stopped before finish: nothing half-written stays
            for sink in (self.mask, self.confidence):
                sink.abort()
        self._layers.shutdown(wait=True, cancel_futures=True)
        self._compressors.shutdown(wait=True, cancel_futures=True)
        self._hand_over.__exit__(kind, exc, trace)
        self._pages.__exit__(kind, exc, trace)

    def add(self, index: int, result: BlockResult) -> None:
        """Write one block into both layers; returns once the previous block's writes are done and
        this one's are under way (at most one block is held)."""
        with self._lock:
            self._wait_writes()
            self._writes = [
                self._layers.submit(self.mask.write, result.core, result.classes),
                self._layers.submit(self.confidence.write, result.core, result.confidence),
            ]
            self.counts += result.class_counts(len(self.counts))
            self.added.add(index)

    def _wait_writes(self) -> None:
        writes, self._writes = self._writes, []
        for write in writes:
            write.result()

    def follow(self) -> None:
        """Add blocks on a background thread as they land in the store (those a killed run left
        first), until every block is in or ``finish`` is called. A failure there (a full disk, a
        block changed on disk) stops the following and is raised by ``finish``."""
        self._follower = threading.Thread(target=self._follow, name="stitch-follow", daemon=True)
        self._follower.start()

    def _follow(self) -> None:
        try:
            while len(self.added) < self.prepared.n_blocks and not self._stop.is_set():
                new = sorted(self.store.stored() - self.added)
                for index in new:
                    if self._stop.is_set():
                        return
                    self.add(index, _load_checked(self.store, index))
                if not new:
                    self._stop.wait(self.poll_s)
        except BaseException as exc:  # handed to finish, on the caller's thread
            self._failure = exc

    def _stop_following(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join()
            self._follower = None

    def finish(self, *, infer_s: float = float("nan"), reused: int = 0, started: float | None = None) -> SurveyRecord:
        """Add the blocks not yet added (all of them when nothing was followed), lay both COGs out,
        publish them and write survey.json; clear the store. Returns the survey record."""
        self._stop_following()
        prepared, out_dir = self.prepared, self.prepared.out_dir
        if self._failure is not None:  # first: a block the follower found changed is gone from the store
            raise disk_error(self._failure, out_dir, prepared.output_bytes) from None
        missing = set(range(prepared.n_blocks)) - self.store.stored()
        if missing:
            raise MsafError(
                f"{len(missing)} of {prepared.n_blocks} blocks are not inferred yet (first: {min(missing)});"
                " run the inference first"
            )
        finish_started = time.perf_counter()
        meta = prepared.meta
        created = creation_time()
        tags = {
            "MSAF_MODEL": meta.name,
            "MSAF_MODEL_PRESET": meta.preset,
            "MSAF_MODEL_SHA256": prepared.model_sha256,
            "MSAF_SOURCE": prepared.info.name,
            "MSAF_SOURCE_FINGERPRINT": prepared.source_fingerprint,
            "MSAF_PARAMS": json.dumps(
                prepared.plan.as_dict()
                | {"tta": prepared.cfg.tta, "scales": list(prepared.cfg.scales)}
                | ({"views": list(prepared.regridded_views)} if prepared.regridded_views else {})
            ),
            "MSAF_SOFTWARE": f"msaf-pipeline {pipeline.__version__}",
            "MSAF_CREATED_UTC": created,
            "MSAF_CLASSES": json.dumps(meta.class_names),
        }
        layers = {self.mask: "class ids (255 = nodata)", self.confidence: "max class probability x 255 (0 = nodata)"}
        with rasterio.Env(GDAL_CACHEMAX=prepared.cfg.gdal_cache_mb * 1024 * 1024):
            try:
                self._add_rest()
                self._wait_writes()
                builds = [
                    self._layers.submit(sink.build_cog, tags | {"MSAF_LAYER": name}) for sink, name in layers.items()
                ]
                for build in builds:
                    build.result()
                retire_report(out_dir)  # the old report and record never sit beside the new mask
                for sink in layers:
                    sink.publish()
                self._done = True
            except BaseException as exc:
                raise disk_error(exc, out_dir, prepared.output_bytes) from None
        timings = {"validate_s": prepared.validate_s, "infer_s": infer_s, "cog_s": time.perf_counter() - finish_started}
        timings["total_s"] = (
            time.perf_counter() - started if started is not None else prepared.validate_s + infer_s + timings["cog_s"]
        )
        record = self._record(created, reused, timings)
        record.write(out_dir)
        self.store.clear()
        # stores of earlier runs with other settings describe no output any more: not left behind
        shutil.rmtree(SurveyFolder(out_dir).blocks, ignore_errors=True)
        return record

    def _add_rest(self) -> None:
        """The blocks not added yet, in order, the next one loaded while this one is written."""
        rest = sorted(set(range(self.prepared.n_blocks)) - self.added)
        if not rest:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="stitch-load") as loader:
            upcoming = loader.submit(_load_checked, self.store, rest[0])
            for position, index in enumerate(rest):
                result = upcoming.result()
                if position + 1 < len(rest):
                    upcoming = loader.submit(_load_checked, self.store, rest[position + 1])
                self.add(index, result)

    def _record(self, created: str, reused: int, timings: dict[str, float]) -> SurveyRecord:
        prepared = self.prepared
        info, meta, grid = prepared.info, prepared.meta, prepared.grid
        megapixels = info.width * info.height / 1e6
        infer_s = timings["infer_s"]
        return SurveyRecord(
            software_version=pipeline.__version__,
            created_utc=created,
            job=prepared.job,
            input=InputRecord(**info.describe(), fingerprint=prepared.source_fingerprint),
            area_of_interest=AreaRecord(**prepared.aoi.record()) if prepared.aoi is not None else None,
            collar=CollarRecord(**asdict(rule)) if (rule := prepared.collar) is not None else None,
            model=ModelRecord(
                path=str(prepared.model_path),
                sha256=prepared.model_sha256,
                name=meta.name,
                preset=meta.preset,
                registry=prepared.model_ref,
                classes=meta.class_names,
                tile_size=meta.tile_size,
                gsd_m=meta.gsd_m,
            ),
            tiling=TilingRecord(
                **prepared.plan.as_dict(),
                tiles=grid.n_tiles,
                blocks=prepared.n_blocks,
                blocks_reused=reused,
                tile_shape=list(grid.tile_shape),
                resample_factor=prepared.factor,
                working_gsd_m=prepared.working_gsd_m,
                working_shape=[grid.height, grid.width],
                views=list(prepared.regridded_views) if prepared.regridded_views else None,
            ),
            device=str(device := resolve_device(prepared.cfg.device)),
            precision=resolve_precision(prepared.cfg.precision, device),
            torch=torch.__version__,
            tta=prepared.cfg.tta,
            scales=list(prepared.cfg.scales),
            thresholds=meta.thresholds_at(prepared.cfg.scales),
            exposure_floor=prepared.exposure_floor,
            compile=prepared.cfg.compile,
            workers=prepared.cfg.workers,
            readers=prepared.cfg.reader_threads,
            gsd_warning=prepared.gsd_warning,
            class_pixels=dict(zip(meta.class_names, self.counts.tolist(), strict=True)),
            outputs={"mask": SurveyFolder.MASK, "confidence": SurveyFolder.CONFIDENCE},
            timings=TimingRecord(**{k: round(v, 3) for k, v in timings.items()}),
            throughput_mpix_s=ThroughputRecord(
                inference=round(megapixels / infer_s, 3) if infer_s == infer_s else None,
                end_to_end=round(megapixels / timings["total_s"], 3),
            ),
            peak_rss_mb=round(peak_rss_mb(), 1),
        )


def stitch(
    prepared: PreparedSurvey, *, infer_s: float = float("nan"), reused: int = 0, started: float | None = None
) -> SurveyRecord:
    """Write the stored blocks into mask.tif and confidence.tif (COGs) and survey.json at once (after
    the inference; a survey plan follows the store instead); clear the store."""
    with Stitcher(prepared) as stitcher:
        return stitcher.finish(infer_s=infer_s, reused=reused, started=started)


def _load_checked(store: BlockStore, index: int) -> BlockResult:
    try:
        return store.take(index)
    except CorruptBlock as exc:
        store.path(index).unlink(missing_ok=True)
        raise MsafError(
            f"block {index} changed on disk after it was inferred ({exc}); rerun the survey to recompute it"
        ) from None
