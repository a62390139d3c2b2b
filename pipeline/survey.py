"""The survey engine: orthomosaic -> blended, georeferenced class mask + confidence (COGs).

Library code, no orchestration: the CLI, a Prefect flow or a Dask worker call the same functions.
Data flows one way: raster -> blocks (core + halo) -> tiles -> probabilities -> blended core ->
tiled GeoTIFF -> COG.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

import pipeline
from pipeline.checkpoint import ModelMetadata, file_sha256, load_checkpoint
from pipeline.config import SurveyConfig
from pipeline.errors import MsafError
from pipeline.fsutil import write_json
from pipeline.inference.blend import CONFIDENCE_NODATA, NODATA, BlockResult, infer_block
from pipeline.inference.device import resolve_device
from pipeline.inference.runner import TileRunner
from pipeline.raster.cog import GeoTiffSink
from pipeline.raster.grid import Block, TileGrid
from pipeline.raster.source import BlockReader, SourceInfo, file_fingerprint, open_source

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class TilingPlan:
    """The resolved tiling of one survey: what makes outputs comparable and resumable."""

    tile: int
    overlap: int
    block: int
    batch: int

    def as_dict(self) -> dict[str, int]:
        return {"tile": self.tile, "overlap": self.overlap, "block": self.block, "batch": self.batch}


def plan_tiling(cfg: SurveyConfig, meta: ModelMetadata) -> TilingPlan:
    """Tile size defaults to the model's training scale; overlap to a quarter tile."""
    tile = cfg.tile or meta.tile_size
    overlap = cfg.overlap if cfg.overlap is not None else tile // 4
    if overlap >= tile:
        raise MsafError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    return TilingPlan(tile, overlap, cfg.block, cfg.batch)


def check_gsd(info: SourceInfo, meta: ModelMetadata, cfg: SurveyConfig) -> str | None:
    """Compare survey and training GSD; warn or refuse (per config) beyond the tolerance factor."""
    if cfg.gsd_policy == "ignore" or not meta.gsd_m or info.crs_assumed:
        return None
    ratio = info.gsd_m / meta.gsd_m
    if max(ratio, 1 / ratio) <= cfg.gsd_tolerance:
        return None
    message = (f"{info.path.name}: ground sample distance {info.gsd_m * 1000:.2f} mm differs from the model's "
               f"training GSD {meta.gsd_m * 1000:.2f} mm by {max(ratio, 1 / ratio):.1f}x "
               f"(tolerance {cfg.gsd_tolerance}x); resample the orthomosaic or use a matching model")
    if cfg.gsd_policy == "refuse":
        raise MsafError(message + " (survey.gsd_policy=refuse)")
    log.warning(message)
    return message


def _check_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MsafError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise MsafError(f"output folder {out_dir} is not writable; choose another --out")


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

    def __init__(self, reader: BlockReader, runners: list[TileRunner], grid: TileGrid,
                 fill: tuple[float, ...]) -> None:
        self.reader = reader
        self.runners: queue.Queue[TileRunner] = queue.Queue()
        for runner in runners:
            self.runners.put(runner)
        self.workers = len(runners)
        self.grid = grid
        self.fill = fill

    def _infer(self, block: Block, pixels: np.ndarray, valid: np.ndarray) -> BlockResult:
        runner = self.runners.get()
        try:
            return infer_block(runner, self.grid, block, pixels, valid, self.fill)
        finally:
            self.runners.put(runner)

    def _reads(self, pool: ThreadPoolExecutor, blocks: list[Block]) -> Iterator[tuple[Block, np.ndarray, np.ndarray]]:
        """Blocks with their pixels, in order, each read started ``workers`` blocks ahead."""
        upcoming = iter(blocks)
        pending: deque[tuple[Block, Future]] = deque()
        for block in upcoming:
            pending.append((block, pool.submit(self.reader.read, block.region)))
            if len(pending) > self.workers:
                block, read = pending.popleft()
                yield block, *read.result()
        while pending:
            block, read = pending.popleft()
            yield block, *read.result()

    def run(self, blocks: list[Block], consume: Callable[[BlockResult], None]) -> None:
        """Infer every block; ``consume`` gets each result.

        With one worker, inference runs in the calling thread: PyTorch's CPU thread pool belongs to
        the thread that first used it, and driving it from another thread measured ~30 % slower.
        """
        with ThreadPoolExecutor(1, thread_name_prefix="read") as read_pool:
            reads = self._reads(read_pool, blocks)
            if self.workers == 1:
                for block, pixels, valid in reads:
                    consume(self._infer(block, pixels, valid))
                return
            with ThreadPoolExecutor(self.workers, thread_name_prefix="infer") as infer_pool:
                running: set[Future] = set()
                for block, pixels, valid in reads:
                    while len(running) >= 2 * self.workers:
                        done, running = wait(running, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                    running.add(infer_pool.submit(lambda *a: consume(self._infer(*a)), block, pixels, valid))
                for future in running:
                    future.result()


def run_survey(ortho: str | Path, out_dir: str | Path, cfg: SurveyConfig, *, model_path: str | Path | None = None,
               model_ref: str | None = None, assume_crs: str | None = None,
               on_block: ProgressCallback | None = None) -> dict[str, Any]:
    """Process one orthomosaic into ``out_dir``/mask.tif, confidence.tif and survey.json.

    GDAL's block cache is capped (``gdal_cache_mb``): left at its default (5 % of RAM) it keeps
    filling as more of the raster is read and written, and peak memory grows with raster size.

    Returns the survey record (also written as survey.json).
    """
    with rasterio.Env(GDAL_CACHEMAX=cfg.gdal_cache_mb * 1024 * 1024):
        return _run_survey(ortho, out_dir, cfg, model_path=model_path, model_ref=model_ref, assume_crs=assume_crs,
                           on_block=on_block)


def _run_survey(ortho: str | Path, out_dir: str | Path, cfg: SurveyConfig, *, model_path: str | Path | None,
                model_ref: str | None, assume_crs: str | None, on_block: ProgressCallback | None) -> dict[str, Any]:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(out_dir)
    model_path = Path(model_path or cfg.model)

    info = open_source(ortho, cfg.scaling, assume_crs)
    device = resolve_device(cfg.device)
    model, meta = load_checkpoint(model_path, device)
    gsd_warning = check_gsd(info, meta, cfg)
    plan = plan_tiling(cfg, meta)
    _check_out_dir(out_dir)
    grid = TileGrid(info.height, info.width, plan.tile, plan.overlap)
    blocks = grid.blocks(plan.block)
    timings["validate_s"] = time.perf_counter() - started

    runners = [TileRunner(model, meta.mean, meta.std, device, plan.batch, grid.tile_shape,
                          tta=cfg.tta, compile=cfg.compile) for _ in range(cfg.workers)]
    pipeline_ = BlockPipeline(BlockReader(info, cfg.readers), runners, grid, meta.mean)
    num_classes = len(meta.classes)
    counts = np.zeros(num_classes, np.int64)
    lock = threading.Lock()
    done = 0
    mask_sink = GeoTiffSink(out_dir / "mask.tif", info.width, info.height, info.crs, info.transform, NODATA)
    conf_sink = GeoTiffSink(out_dir / "confidence.tif", info.width, info.height, info.crs, info.transform,
                            CONFIDENCE_NODATA)

    def consume(result: BlockResult) -> None:
        nonlocal done
        mask_sink.write(result.core, result.classes)
        conf_sink.write(result.core, result.confidence)
        with lock:
            counts[:] += result.class_counts(num_classes)
            done += 1
            finished = done
        if on_block:
            on_block(finished, len(blocks))

    infer_started = time.perf_counter()
    try:
        pipeline_.run(blocks, consume)
    except BaseException:
        mask_sink.abort()
        conf_sink.abort()
        raise
    finally:
        pipeline_.reader.close()
    timings["infer_s"] = time.perf_counter() - infer_started

    model_sha = file_sha256(model_path)
    source_fp = file_fingerprint(info.path)
    record: dict[str, Any] = {
        "software_version": pipeline.__version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": info.describe() | {"fingerprint": source_fp},
        "model": {"path": str(model_path), "sha256": model_sha, "name": meta.name, "preset": meta.preset,
                  "registry": model_ref,
                  "classes": meta.class_names, "tile_size": meta.tile_size, "gsd_m": meta.gsd_m},
        "tiling": plan.as_dict() | {"tiles": grid.n_tiles, "blocks": len(blocks),
                                    "tile_shape": list(grid.tile_shape)},
        "device": str(device), "torch": torch.__version__, "tta": cfg.tta, "compile": cfg.compile,
        "workers": cfg.workers, "readers": cfg.readers, "gsd_warning": gsd_warning,
        "class_pixels": dict(zip(meta.class_names, counts.tolist(), strict=True)),
        "outputs": {"mask": "mask.tif", "confidence": "confidence.tif"},
    }
    tags = {
        "MSAF_MODEL": meta.name, "MSAF_MODEL_PRESET": meta.preset, "MSAF_MODEL_SHA256": model_sha,
        "MSAF_SOURCE": info.path.name, "MSAF_SOURCE_FINGERPRINT": source_fp,
        "MSAF_PARAMS": json.dumps(plan.as_dict() | {"tta": cfg.tta}),
        "MSAF_SOFTWARE": f"msaf-pipeline {pipeline.__version__}",
        "MSAF_CREATED_UTC": record["created_utc"], "MSAF_CLASSES": json.dumps(meta.class_names),
    }
    cog_started = time.perf_counter()
    sinks = {mask_sink: "class ids (255 = nodata)", conf_sink: "max class probability x 255 (0 = nodata)"}
    try:
        for sink, layer in sinks.items():
            sink.build_cog(tags | {"MSAF_LAYER": layer})
        for sink in sinks:
            sink.publish()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    timings["cog_s"] = time.perf_counter() - cog_started
    timings["total_s"] = time.perf_counter() - started
    megapixels = info.width * info.height / 1e6
    record |= {
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "throughput_mpix_s": {"inference": round(megapixels / timings["infer_s"], 3),
                              "end_to_end": round(megapixels / timings["total_s"], 3)},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    write_json(out_dir / "survey.json", record)
    return record
