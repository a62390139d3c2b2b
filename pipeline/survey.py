"""The survey engine: orthomosaic -> blended, georeferenced class mask + confidence (COGs).

Library code, no orchestration: the CLI, a Prefect flow or a Dask worker call the same functions.
Data flows one way: raster -> blocks (core + halo) -> tiles -> probabilities -> blended core ->
tiled GeoTIFF -> COG.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import resource
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import astuple, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import numpy as np
import rasterio
import torch

from pipeline.checkpoint import ModelMetadata, check_weights, file_sha256, load_checkpoint, read_metadata
from pipeline.config import SurveyConfig
from pipeline.errors import MsafError
from pipeline.fsutil import check_free_space
from pipeline.inference.blend import BlockResult, infer_block, infer_scaled_block
from pipeline.inference.blockstore import BackgroundSaver, BlockStore
from pipeline.inference.device import resolve_device, resolve_precision
from pipeline.inference.runner import TileRunner, inference_network
from pipeline.inference.scales import SINGLE, Scales, scales_key
from pipeline.raster.aoi import AreaOfInterest, read_area_of_interest
from pipeline.raster.buffers import small_pages
from pipeline.raster.collar import CollarFinder, CollarRule
from pipeline.raster.grid import Block, Box, TileGrid
from pipeline.raster.resample import GridScale, ScaledBlock, views_on_grid, working_factor
from pipeline.raster.source import BlockReader, SourceInfo, open_source, source_fingerprint
from pipeline.stop import raise_if_stopped
from pipeline.survey_folder import (
    REPORT_OUTPUTS,
    SURVEY_OUTPUTS,
    SurveyFolder,
    prepare_output_folder,
    refuse_overwriting,
)
from pipeline.survey_record import (
    SurveyRecord,
)

log = logging.getLogger(__name__)
R = TypeVar("R")
ProgressCallback = Callable[[int, int], None]
WorkUnit = Block | ScaledBlock  # a block of the input grid, or of a resampled survey


def read_box(block: WorkUnit) -> Box:
    """The input window a block's inference reads."""
    return block.read if isinstance(block, ScaledBlock) else block.region


@dataclass(frozen=True)
class TilingPlan:
    """The resolved tiling of one survey: what makes outputs comparable and resumable."""

    tile: int
    overlap: int
    block: int
    batch: int

    def as_dict(self) -> dict[str, int]:
        """Tile, overlap, block and batch (recorded in survey.json and the COG tags)."""
        return {"tile": self.tile, "overlap": self.overlap, "block": self.block, "batch": self.batch}


def plan_tiling(cfg: SurveyConfig, meta: ModelMetadata) -> TilingPlan:
    """Tile size defaults to the model's training scale; overlap to a quarter tile."""
    tile = cfg.tile or meta.tile_size
    overlap = cfg.overlap if cfg.overlap is not None else tile // 4
    if 2 * overlap >= tile:
        raise MsafError(
            f"overlap ({overlap}) must be under half the tile ({tile}): each pixel would be inferred 4x or more"
        )
    return TilingPlan(tile, overlap, cfg.block, cfg.batch)


def resample_factor(info: SourceInfo, meta: ModelMetadata, cfg: SurveyConfig) -> float:
    """Working pixels per input pixel (``survey.resample``): the model's working GSD over the
    input's; 1.0 when off, when either GSD is unknown or when the CRS was only assumed."""
    if info.crs_assumed:
        return 1.0
    return working_factor(info.gsd_m, meta.gsd_m, cfg.resample, cfg.resample_limit)


def check_gsd(info: SourceInfo, meta: ModelMetadata, cfg: SurveyConfig, factor: float = 1.0) -> str | None:
    """Compare survey and training GSD; warn or refuse (per config) beyond the tolerance factor.

    A resampled survey runs the model at its own scale, so only a coarse input is worth a word:
    enlarging cannot show detail the input lacks.
    """
    if cfg.gsd_policy == "ignore" or not meta.gsd_m or info.crs_assumed:
        return None
    ratio = info.gsd_m / meta.gsd_m
    if factor != 1.0:
        if ratio <= cfg.gsd_tolerance:
            return None
        message = (
            f"{info.name}: ground sample distance {info.gsd_m * 1000:.2f} mm is {ratio:.1f}x coarser than the "
            f"model's working GSD {meta.gsd_m * 1000:.2f} mm (tolerance {cfg.gsd_tolerance}x); it is enlarged "
            "for the model, but cracks narrower than about one input pixel may not show"
        )
        log.warning(message)
        return message
    if max(ratio, 1 / ratio) <= cfg.gsd_tolerance:
        return None
    message = (
        f"{info.name}: ground sample distance {info.gsd_m * 1000:.2f} mm differs from the model's "
        f"training GSD {meta.gsd_m * 1000:.2f} mm by {max(ratio, 1 / ratio):.1f}x "
        f"(tolerance {cfg.gsd_tolerance}x); resample the orthomosaic or use a matching model"
    )
    if cfg.gsd_policy == "refuse":
        raise MsafError(message + " (survey.gsd_policy=refuse)")
    log.warning(message)
    return message


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB).

    Linux's VmHWM starts afresh with each program; ru_maxrss (the fallback elsewhere) survives
    exec and so can report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class BlockPipeline:
    """Decodes the next block (with a pool of reader threads) while workers infer earlier blocks.

    Memory stays bounded whatever the raster size: one block is read ahead per worker and at most
    two per worker are queued for inference.
    """

    def __init__(
        self,
        reader: BlockReader,
        runners: list[TileRunner],
        grid: TileGrid,
        scale: GridScale | None = None,
        aoi: AreaOfInterest | None = None,
        collar: CollarFinder | None = None,
    ) -> None:
        self.reader = reader
        self.aoi = aoi
        self.collar = collar
        self.runners: queue.Queue[TileRunner] = queue.Queue()
        for runner in runners:
            self.runners.put(runner)
        self.workers = len(runners)
        self.grid = grid
        self.scale = scale

    def _infer(self, block: WorkUnit, pixels: np.ndarray, valid: np.ndarray) -> BlockResult:
        """The block's result; its pixels go back to the reader for a later block once inferred."""
        runner = self.runners.get()
        try:
            if isinstance(block, ScaledBlock):
                assert self.scale is not None
                result = infer_scaled_block(runner, self.grid, self.scale, block, pixels, valid)
            else:
                result = infer_block(runner, self.grid, block, pixels, valid)
        finally:
            self.runners.put(runner)
        self.reader.release(pixels)
        return result

    def _reads(
        self, pool: ThreadPoolExecutor, blocks: list[WorkUnit]
    ) -> Iterator[tuple[WorkUnit, np.ndarray, np.ndarray]]:
        """Blocks with their pixels, in order, each read started ``workers`` blocks ahead; each read
        knows the box read next below it, whose top rows it holds for it."""
        boxes = [read_box(block) for block in blocks]
        below: dict[int, Box] = {}
        above: dict[tuple[int, int], int] = {}  # a column of boxes -> the last one so far
        for position, box in enumerate(boxes):
            if (last := above.get((box.col0, box.col1))) is not None:
                below[last] = box
            above[(box.col0, box.col1)] = position
        pending: deque[tuple[WorkUnit, Future]] = deque()
        for position, (block, box) in enumerate(zip(blocks, boxes, strict=True)):
            raise_if_stopped()
            pending.append((block, pool.submit(self._read, box, below.get(position))))
            if len(pending) > self.workers:
                ready, read = pending.popleft()
                yield ready, *read.result()
        while pending:
            ready, read = pending.popleft()
            yield ready, *read.result()

    def _read(self, box: Box, keep_for: Box | None) -> tuple[np.ndarray, np.ndarray]:
        """A block's pixels and footprint, less the painted-in collar of a file without one, cut to
        the area of interest (a block wholly outside it is not read). The collar is found first:
        it is the picture's, and the area's edge is no fill."""
        if self.aoi is not None and not self.aoi.covers(box):
            return self.reader.nothing(box)
        pixels, valid = self.reader.read(box, keep_for)
        if self.collar is not None:
            self.collar.clear(box, pixels, valid)
        if self.aoi is not None and not self.aoi.contains(box):
            valid &= self.aoi.inside(box)
        return pixels, valid

    def run(self, blocks: list[WorkUnit], consume: Callable[[WorkUnit, BlockResult], None]) -> None:
        """Infer every block; ``consume`` gets each block and its result.

        With one worker, inference runs in the calling thread: PyTorch's CPU thread pool belongs to
        the thread that first used it, and driving it from another thread measured ~30 % slower.
        """
        with ThreadPoolExecutor(1, thread_name_prefix="read") as read_pool:
            reads = self._reads(read_pool, blocks)
            if self.workers == 1:
                for block, pixels, valid in reads:
                    consume(block, self._infer(block, pixels, valid))
                return
            with ThreadPoolExecutor(self.workers, thread_name_prefix="infer") as infer_pool:
                running: set[Future] = set()
                for block, pixels, valid in reads:
                    while len(running) >= 2 * self.workers:
                        done, running = wait(running, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                    running.add(infer_pool.submit(lambda *a: consume(a[0], self._infer(*a)), block, pixels, valid))
                for future in running:
                    future.result()


@dataclass(frozen=True)
class PreparedSurvey:
    """A validated survey, ready to fan out: only paths, settings and small values (picklable).

    ``key`` identifies the results: source fingerprint + model hash + inference settings. Block
    results live in ``out_dir/.msaf-blocks/<key>`` until the mask is stitched.
    """

    ortho: str
    out_dir: Path
    cfg: SurveyConfig
    model_path: Path
    model_ref: str | None
    model_sha256: str
    info: SourceInfo
    meta: ModelMetadata
    plan: TilingPlan
    source_fingerprint: str
    gsd_warning: str | None
    validate_s: float
    job: dict[str, str] = field(default_factory=dict)
    factor: float = 1.0  # working pixels per input pixel (1: the model runs on the input's grid)
    aoi: AreaOfInterest | None = None  # the part of the raster surveyed (None: all of it)
    views: Scales = SINGLE  # the views on the working grid (cfg.scales are relative to the model's GSD)

    @property
    def exposure_floor(self) -> float:
        """The luminance dark tiles are lifted to: the survey's setting, else the model's own."""
        return self.cfg.exposure_floor if self.cfg.exposure_floor is not None else self.meta.exposure_floor

    @property
    def collar(self) -> CollarRule | None:
        """The fill taken as nodata (``survey.collar``): auto finds it in files that declare no
        footprint of their own; None: every pixel the file calls valid is ground."""
        cfg = self.cfg.collar
        if cfg.mode == "off" or (cfg.mode == "auto" and self.info.footprint != "none"):
            return None
        return CollarRule.of(cfg)

    @property
    def regridded_views(self) -> Scales | None:
        """The views on the working grid where they are not the asked scales (a finer input's finest
        view on its own pixels: ``views_on_grid``); None otherwise. Recorded, tagged and keyed."""
        return self.views if self.views != self.cfg.scales else None

    @property
    def scale(self) -> GridScale | None:
        """The input <-> working grid mapping of a resampled survey; None when it runs as it is."""
        return None if self.factor == 1.0 else GridScale(self.info.height, self.info.width, self.factor)

    @property
    def working_gsd_m(self) -> float:
        """The GSD the model sees."""
        return self.info.gsd_m / self.factor

    @property
    def grid(self) -> TileGrid:
        """The global tile grid the model runs on (the working grid of a resampled survey)."""
        if self.scale is not None:
            return self.scale.work_grid(self.plan.tile, self.plan.overlap)
        return TileGrid(self.info.height, self.info.width, self.plan.tile, self.plan.overlap)

    @property
    def input_block(self) -> int:
        """Core side of a block on the input grid: an enlarged survey takes smaller input blocks,
        so a working block stays about ``plan.block`` px and memory stays flat."""
        return max(64, int(self.plan.block / self.factor)) if self.factor > 1.0 else self.plan.block

    def blocks(self) -> list[WorkUnit]:
        """The units of work, by index."""
        if self.scale is not None:
            return list(self.scale.blocks(self.grid, self.input_block))
        return list(self.grid.blocks(self.plan.block))

    @property
    def n_blocks(self) -> int:
        """Number of blocks (units of work)."""
        side = self.input_block
        return -(-self.info.height // side) * -(-self.info.width // side)

    @property
    def key(self) -> str:
        """Identity of the results: source fingerprint + model hash + inference settings."""
        settings = json.dumps(
            self.plan.as_dict()
            | {"tta": self.cfg.tta, "scale": self.info.scale, "crs_assumed": self.info.crs_assumed}
            | ({"precision": self.cfg.precision} if self.cfg.precision != "auto" else {})
            | ({"scales": scales_key(self.cfg.scales)} if self.cfg.scales != SINGLE else {})
            | ({"views": scales_key(self.regridded_views)} if self.regridded_views else {})
            | ({"resample": repr(self.factor)} if self.factor != 1.0 else {})
            | ({"exposure_floor": repr(self.exposure_floor)} if self.exposure_floor != self.meta.exposure_floor else {})
            | ({"aoi": self.aoi.key} if self.aoi is not None else {})
            | ({"collar": astuple(self.collar)} if self.collar is not None else {}),
            sort_keys=True,
        )
        digest = hashlib.sha256(f"{self.source_fingerprint}|{self.model_sha256}|{settings}".encode())
        return digest.hexdigest()[:24]

    @property
    def store_dir(self) -> Path:
        """Where finished blocks wait for the stitch (kept for a resume)."""
        return SurveyFolder(self.out_dir).blocks / self.key

    @cached_property
    def _cores(self) -> tuple[Box, ...]:
        """Each block's core window, by index (computed once: the store checks every block against it)."""
        return tuple(block.core for block in self.blocks())

    @property
    def store(self) -> BlockStore:
        """The checked block store of this survey."""
        cores = self._cores
        return BlockStore(
            self.store_dir, self.key, lambda i: cores[i] if 0 <= i < len(cores) else None, len(self.meta.classes)
        )

    @property
    def output_bytes(self) -> int:
        """Disk a survey needs, estimated at 1 byte per pixel: block store, temporary and final mask +
        confidence (2 bytes per pixel raw, deflated)."""
        return self.info.width * self.info.height


def prepare_survey(
    ortho: str | Path,
    out_dir: str | Path,
    cfg: SurveyConfig,
    *,
    model_path: str | Path | None = None,
    model_ref: str | None = None,
    assume_crs: str | None = None,
    aoi: str | Path | None = None,
    aoi_layer: str | None = None,
    job: dict[str, str] | None = None,
) -> PreparedSurvey:
    """Validate input, model, GSD and output folder, and fix the tiling plan; loads no weights.

    ``aoi``: a vector file whose polygons (``aoi_layer``, else its first layer) are the part of the
    raster to survey (None: all of it).
    ``job``: the owner's job details (``pipeline.job``), recorded in survey.json.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    model_path = Path(model_path or cfg.model)
    info = open_source(ortho, cfg.scaling, assume_crs, allow_vrt=cfg.allow_vrt, allow_remote=cfg.allow_remote)
    area = read_area_of_interest(aoi, aoi_layer, info.crs, info.transform, info.width, info.height) if aoi else None
    inputs: list[str | os.PathLike[str]] = [model_path, *info.source.local_files(), *([aoi] if aoi else [])]
    refuse_overwriting(inputs, out_dir, SURVEY_OUTPUTS + REPORT_OUTPUTS, "survey")
    # hashing the input (GIL released) beside the model's checks: a 16384² JPEG raster is 68 MB, 0.05 s
    source_hash = _in_background(source_fingerprint, info)
    resolve_precision(cfg.precision, resolve_device(cfg.device))
    meta = read_metadata(model_path)
    check_weights(model_path, meta)  # before any orchestration: a mixed-up file is one line, not a task failure
    to_model_gsd = resample_factor(info, meta, cfg)
    gsd_warning = check_gsd(info, meta, cfg, to_model_gsd)
    factor, views = views_on_grid(cfg.scales, to_model_gsd)
    if not meta.calibrated_for(cfg.scales):
        log.warning(
            "%s has no decision thresholds calibrated for the views %s: deciding by its single view's %s"
            " (calibrate a copy: msaf models calibrate)",
            model_path.name,
            scales_key(cfg.scales),
            meta.thresholds,
        )
    plan = plan_tiling(cfg, meta)
    prepare_output_folder(out_dir, SURVEY_OUTPUTS + REPORT_OUTPUTS)
    prepared = PreparedSurvey(
        info.path,
        out_dir,
        cfg,
        model_path,
        model_ref,
        file_sha256(model_path),
        info,
        meta,
        plan,
        source_hash.result(),
        gsd_warning,
        time.perf_counter() - started,
        job or {},
        factor,
        area,
        views,
    )
    check_free_space(out_dir, prepared.output_bytes)
    return prepared


def _in_background(function: Callable[..., R], *args: object) -> Future[R]:
    """``function(*args)`` on a daemon thread: a refusal raised meanwhile is not held up until it ends
    (an executor's threads are joined at exit, and a large input takes seconds to hash)."""
    future: Future[R] = Future()

    def run() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # raised by ``result()`` in the caller
            future.set_exception(exc)

    threading.Thread(target=run, name=f"background-{function.__name__}", daemon=True).start()
    return future


_MODELS: dict[tuple[str, str, str], tuple[torch.nn.Module, ModelMetadata]] = {}
_MODELS_LOCK = threading.Lock()


def cached_model(path: Path, sha256: str, device: torch.device) -> tuple[torch.nn.Module, ModelMetadata]:
    """A checkpoint's network prepared for inference (``inference_network``), made once per process and
    shared by every runner (a Dask worker serves many chunks, an inbox many surveys): each runner
    folded its own copy before, 0.1 s each, one after another before the first block."""
    key = (str(path), sha256, str(device))
    with _MODELS_LOCK:
        if key not in _MODELS:
            model, meta = load_checkpoint(path, device)
            _MODELS[key] = (inference_network(model, device), meta)
        return _MODELS[key]


@dataclass(frozen=True)
class BlockCounts:
    """What one call of ``infer_blocks`` did: blocks it computed, and blocks a killed run had finished."""

    computed: int
    reused: int


def infer_blocks(
    prepared: PreparedSurvey, indices: list[int] | None = None, on_block: ProgressCallback | None = None
) -> BlockCounts:
    """Infer blocks (all, or ``indices``) into the block store, skipping those already there."""
    cfg = prepared.cfg
    with rasterio.Env(GDAL_CACHEMAX=cfg.gdal_cache_mb * 1024 * 1024), small_pages():
        store = prepared.store
        grid = prepared.grid
        blocks = prepared.blocks()
        wanted = [blocks[i] for i in (indices if indices is not None else range(len(blocks)))]
        finished = store.done(b.index for b in wanted)  # checked: a bad file is discarded and recomputed
        todo = [b for b in wanted if b.index not in finished]
        if not todo:
            return BlockCounts(computed=0, reused=len(wanted))
        device = resolve_device(cfg.device)
        model, meta = cached_model(prepared.model_path, prepared.model_sha256, device)
        runners = [
            TileRunner(
                model,
                meta.mean,
                meta.std,
                device,
                prepared.plan.batch,
                grid.tile_shape,
                tta=cfg.tta,
                scales=prepared.views,
                compile=cfg.compile,
                thresholds=meta.decision_for(cfg.scales),
                bf16=resolve_precision(cfg.precision, device) == "bf16",
                prepared=True,
                exposure_floor=prepared.exposure_floor,
            )
            for _ in range(cfg.workers)
        ]
        # every read buffer made for the largest window: one size, each reused by any later block
        largest = max(box.height * box.width for box in map(read_box, todo))
        reader = BlockReader(prepared.info, cfg.reader_threads, largest)
        collar = CollarFinder(prepared.info, prepared.collar) if prepared.collar is not None else None
        done = len(wanted) - len(todo)

        def saved(index: int) -> None:  # on the saver's one thread
            nonlocal done
            done += 1
            if on_block:
                on_block(done, len(wanted))

        saver = BackgroundSaver(store, saved)  # a block is compressed and written while the next is inferred
        try:
            BlockPipeline(reader, runners, grid, prepared.scale, prepared.aoi, collar).run(
                todo, lambda block, result: saver.save(block.index, result)
            )
        finally:
            try:
                saver.wait()
            finally:
                reader.close()
                if collar is not None:
                    collar.close()
        return BlockCounts(computed=len(todo), reused=len(wanted) - len(todo))


def run_survey(
    ortho: str | Path,
    out_dir: str | Path,
    cfg: SurveyConfig,
    *,
    model_path: str | Path | None = None,
    model_ref: str | None = None,
    assume_crs: str | None = None,
    aoi: str | Path | None = None,
    aoi_layer: str | None = None,
    job: dict[str, str] | None = None,
) -> SurveyRecord:
    """Process one orthomosaic into ``out_dir``/mask.tif, confidence.tif and survey.json, in this
    process: the survey plan (``pipeline.survey_plan``) run step by step, untracked, without a report.

    GDAL's block cache is capped (``gdal_cache_mb``): left at its default (5 % of RAM) it keeps
    filling as more of the raster is read and written, and peak memory grows with raster size.
    Blocks a killed run finished are reused. Returns the survey record (also written as survey.json).
    """
    from pipeline.config import Params
    from pipeline.survey_plan import LocalRunner, SurveyRequest, run_plan

    request = SurveyRequest(
        ortho=str(ortho),
        out=str(out_dir),
        params=Params(survey=cfg),
        model=str(model_path or cfg.model),
        model_ref=model_ref,
        assume_crs=assume_crs,
        aoi=str(aoi) if aoi else None,
        aoi_layer=aoi_layer,
        job=job or {},
        report=False,
        track=False,
        chunk_blocks=0,
    )
    return run_plan(request, LocalRunner()).record
