"""Infer one block: fill nodata, blend the tiles on the device, quantise to class ids + confidence."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from pipeline.class_ids import NO_CLASS
from pipeline.inference.decision import Array, Thresholds, array_namespace, decide_into, decide_planes
from pipeline.inference.runner import TileRunner
from pipeline.raster.grid import Block, Box, TileGrid
from pipeline.raster.resample import GridScale, ScaledBlock

CONFIDENCE_NODATA = 0  # max probability is >= 1/C > 0 for every valid pixel, so 0 is free
QUANTISE_ROWS = 32  # rows decided at a time, in a core's cache (0.042 s a 4096² block; 0.10 s at 64 rows)


@dataclass(frozen=True)
class BlockResult:
    """Class ids and confidence for a block's core (uint8, nodata 255 / 0)."""

    core: Box
    classes: np.ndarray
    confidence: np.ndarray

    @cached_property
    def id_counts(self) -> np.ndarray:
        """Pixels per class id 0-255, nodata (255) counted as none: one pass over the block, shared by
        the block store's check of a loaded block and the survey's class counts."""
        with warnings.catch_warnings():  # a loaded block is read-only; torch only reads it here
            warnings.simplefilter("ignore", UserWarning)
            ids = torch.from_numpy(self.classes).view(-1)
        counts = torch.bincount(ids, minlength=NO_CLASS + 1).numpy()  # uint8 as it is: 3x faster than
        counts[NO_CLASS] = 0  # numpy's bincount, which casts the block to int64 first
        return counts

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Pixels per class id inside the footprint (nodata not counted)."""
        return self.id_counts[:num_classes]


def blend_block(
    runner: TileRunner,
    grid: TileGrid,
    block: Block,
    pixels: np.ndarray,
    valid: np.ndarray,
    *,
    skip_nodata_tiles: bool = False,
) -> torch.Tensor:
    """Blended probabilities (C, core h, core w) on the runner's device; each tile's nodata is filled
    from its own valid pixels (the runner's training mean only where a tile has none)."""
    return runner.blend(grid, block, pixels, valid, skip_nodata_tiles=skip_nodata_tiles)


def infer_block(runner: TileRunner, grid: TileGrid, block: Block, pixels: np.ndarray, valid: np.ndarray) -> BlockResult:
    """Blend a block and quantise: class ids by the model's decision rule and the probability of
    the chosen class as confidence, nodata marked. Bands of rows are decided as the blend finishes
    them (``TileRunner.blend_rows``), so the block's probabilities never exist all at once."""
    core = block.core
    core_valid = valid[core.relative_to(block.region)]
    if not core_valid.any():
        return _nodata(core)
    classes = np.empty((core.height, core.width), np.uint8)
    confidence = np.empty((core.height, core.width), np.uint8)
    pieces = runner.blend_rows(grid, block, pixels, valid, QUANTISE_ROWS)  # nodata tiles skipped: marked below
    for row0, probs in pieces:
        rows = slice(row0, row0 + probs.shape[1])
        decide_rows(probs, runner.thresholds, classes[rows], confidence[rows])
    return _marked(BlockResult(core, classes, confidence), core_valid)


def infer_scaled_block(
    runner: TileRunner, grid: TileGrid, scale: GridScale, block: ScaledBlock, pixels: np.ndarray, valid: np.ndarray
) -> BlockResult:
    """A block of a resampled survey: its pixels brought onto the working grid, blended there, the
    probabilities brought back onto the input grid and decided there; the footprint is the input's."""
    core = block.core
    core_valid = valid[core.relative_to(block.read)]
    if not core_valid.any():
        return _nodata(core)
    work_pixels, work_valid = scale.to_work(pixels, valid, block.read, block.work.region)
    probs = blend_block(runner, grid, block.work, work_pixels, work_valid)
    return quantise(core, scale.to_input(probs, block.work.core, core), core_valid, runner.thresholds)


def _nodata(core: Box) -> BlockResult:
    shape = (core.height, core.width)
    return BlockResult(core, np.full(shape, NO_CLASS, np.uint8), np.full(shape, CONFIDENCE_NODATA, np.uint8))


def quantise(core: Box, probs: torch.Tensor, core_valid: np.ndarray, thresholds: Thresholds) -> BlockResult:
    """Class ids (the decision rule) and confidence (the chosen class's probability x 255) of a
    core's probabilities (C, h, w); nodata marked outside ``core_valid``."""
    classes = np.empty((core.height, core.width), np.uint8)
    confidence = np.empty((core.height, core.width), np.uint8)
    decide_rows(probs, thresholds, classes, confidence)
    return _marked(BlockResult(core, classes, confidence), core_valid)


def decide_rows(probs: torch.Tensor, thresholds: Thresholds, classes: np.ndarray, confidence: np.ndarray) -> None:
    """Write the class ids and confidence (uint8) of probabilities (C, h, w) into ``classes`` and
    ``confidence`` (h, w); on a CPU a few rows at a time, so the temporaries stay in the cache."""
    if probs.device.type != "cpu":  # a device decides the rows at once, then one copy back of each layer
        ids = torch.empty(probs.shape[1:], dtype=torch.uint8, device=probs.device)
        top = torch.empty(probs.shape[1:], dtype=probs.dtype, device=probs.device)
        decide_into(probs, thresholds, ids, top)
        torch.from_numpy(classes).copy_(ids)
        torch.from_numpy(confidence).copy_(confidence_of(top))
        return
    host = probs.numpy()  # decided in NumPy (``decide_into``: its comparisons are faster than torch's here)
    height = host.shape[1]
    host_top = np.empty((min(QUANTISE_ROWS, height), host.shape[2]), host.dtype)
    for row0 in range(0, height, QUANTISE_ROWS):
        rows = slice(row0, row0 + QUANTISE_ROWS)
        chunk = host[:, rows]
        chunk_top = host_top[: chunk.shape[1]]
        decide_planes(chunk, thresholds, classes[rows], chunk_top)  # the ids land in the mask itself
        np.copyto(confidence[rows], confidence_of(chunk_top), casting="unsafe")  # whole numbers 1-255


def confidence_of(top: Array) -> Array:
    """The confidence layer's value of the chosen class's probability, in place: round(p x 255)
    (half to even) in 1..255, still in the probabilities' dtype; 0 is left for nodata."""
    xp = array_namespace(top)
    xp.multiply(top, 255, out=top)
    xp.round(top, out=top)
    return xp.clip(top, 1, 255, out=top)


def _marked(result: BlockResult, core_valid: np.ndarray) -> BlockResult:
    """The result with nodata (outside ``core_valid``) marked in both layers."""
    if not core_valid.all():
        outside = ~core_valid
        np.copyto(result.classes, NO_CLASS, where=outside)
        np.copyto(result.confidence, CONFIDENCE_NODATA, where=outside)
    return result
