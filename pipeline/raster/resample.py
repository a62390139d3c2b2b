"""Between the input's grid and the model's working grid: which pixels, and with which weights.

A survey at another GSD than the model's is inferred on a *working grid* of the same ground at the
model's GSD: ``factor`` = input GSD / working GSD working pixels per input pixel (> 1: the model
sees the ground enlarged). Working pixel ``j`` covers input ``[j / factor, (j + 1) / factor)``.
Images go input -> working, probabilities come back working -> input; both directions use the
same 1-D rule: an area average when the target is coarser (every source pixel counts, no
aliasing of thin cracks), a bilinear (triangle) kernel when it is finer.

Weights depend only on global pixel indices and are applied tap by tap in a fixed order, so a
pixel's value is bit-identical whichever window it is computed in: the survey's output stays the
same for any block size and worker count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from pipeline.inference.scales import MIN_SCALE
from pipeline.raster.grid import Block, Box, TileGrid

SAME_SCALE = 0.05  # auto: GSDs within 5 % of each other are surveyed as they are


@dataclass(frozen=True)
class AxisMap:
    """One axis: ``n_out`` target pixels from ``n_in`` source pixels, ``ratio`` target px per source px."""

    n_in: int
    n_out: int
    ratio: float

    def taps(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Source indices (n, k) and float32 weights (n, k) of target pixels ``lo..hi-1``; unused
        taps repeat a used index with weight 0."""
        j = np.arange(lo, hi, dtype=np.float64)
        if self.ratio < 1.0:  # target coarser: area average over the covered source pixels
            start = j / self.ratio
            end = np.minimum((j + 1) / self.ratio, self.n_in)
            first = np.floor(start).astype(np.int64)
            k = math.ceil(1.0 / self.ratio) + 1
            index = first[:, None] + np.arange(k)[None, :]
            left = np.maximum(index, start[:, None])
            right = np.minimum(index + 1, end[:, None])
            weight = np.clip(right - left, 0.0, None)
            weight /= weight.sum(1, keepdims=True)
        else:  # target finer: bilinear between the two nearest source centres
            x = np.clip((j + 0.5) / self.ratio - 0.5, 0.0, self.n_in - 1)
            first = np.floor(x).astype(np.int64)
            t = x - first
            index = np.stack((first, first + 1), axis=1)
            weight = np.stack((1.0 - t, t), axis=1)
        used = weight > 0
        index = np.where(used, index, first[:, None])
        return np.clip(index, 0, self.n_in - 1), weight.astype(np.float32)

    def support(self, lo: int, hi: int) -> tuple[int, int]:
        """The source pixels ``[start, stop)`` that target pixels ``lo..hi-1`` read."""
        index, weight = self.taps(lo, hi)
        used = index[weight > 0] if (weight > 0).any() else index
        return int(used.min()), int(used.max()) + 1


def _apply_numpy(values: np.ndarray, index: np.ndarray, weight: np.ndarray, axis: int) -> np.ndarray:
    """Weighted sum of ``values`` along ``axis`` at (n, k) taps, tap by tap (a fixed order)."""
    out = None
    for tap in range(index.shape[1]):
        taken = np.take(values, index[:, tap], axis=axis)
        shape = [1] * values.ndim
        shape[axis] = -1
        term = taken * weight[:, tap].reshape(shape)
        out = term if out is None else out + term
    assert out is not None
    return out


def _apply_torch(values: torch.Tensor, index: np.ndarray, weight: np.ndarray, dim: int) -> torch.Tensor:
    out = None
    device = values.device
    for tap in range(index.shape[1]):
        taken = values.index_select(dim, torch.from_numpy(index[:, tap]).to(device))
        shape = [1] * values.ndim
        shape[dim] = -1
        term = taken * torch.from_numpy(np.ascontiguousarray(weight[:, tap])).to(device).view(shape)
        out = term if out is None else out + term
    assert out is not None
    return out


@dataclass(frozen=True)
class ScaledBlock:
    """A unit of work of a resampled survey: ``core`` on the input grid (what it writes), ``read``
    on the input grid (what it decodes), ``work`` the block of the working grid it infers."""

    index: int
    core: Box
    read: Box
    work: Block


@dataclass(frozen=True)
class GridScale:
    """The input grid (``height`` x ``width``) and the working grid ``factor`` times as fine."""

    height: int
    width: int
    factor: float

    @cached_property
    def work_shape(self) -> tuple[int, int]:
        """(rows, cols) of the working grid: every input pixel covered."""
        return max(1, math.ceil(self.height * self.factor - 1e-9)), max(1, math.ceil(self.width * self.factor - 1e-9))

    @cached_property
    def _to_work(self) -> tuple[AxisMap, AxisMap]:
        rows, cols = self.work_shape
        return AxisMap(self.height, rows, self.factor), AxisMap(self.width, cols, self.factor)

    @cached_property
    def _to_input(self) -> tuple[AxisMap, AxisMap]:
        rows, cols = self.work_shape
        return AxisMap(rows, self.height, 1 / self.factor), AxisMap(cols, self.width, 1 / self.factor)

    def work_grid(self, tile: int, overlap: int) -> TileGrid:
        """The global tile grid on the working grid."""
        return TileGrid(*self.work_shape, tile, overlap)

    def blocks(self, grid: TileGrid, block: int) -> list[ScaledBlock]:
        """``block`` x ``block`` cores of the input grid, each with the working block whose
        probabilities it resamples and the input window that block's pixels come from."""
        rows_back, cols_back = self._to_input
        rows_work, cols_work = self._to_work
        out: list[ScaledBlock] = []
        for row0 in range(0, self.height, block):
            for col0 in range(0, self.width, block):
                core = Box(row0, col0, min(row0 + block, self.height), min(col0 + block, self.width))
                w_rows = rows_back.support(core.row0, core.row1)
                w_cols = cols_back.support(core.col0, core.col1)
                work = grid.block_for(len(out), Box(w_rows[0], w_cols[0], w_rows[1], w_cols[1]))
                r_rows = rows_work.support(work.region.row0, work.region.row1)
                r_cols = cols_work.support(work.region.col0, work.region.col1)
                read = Box(
                    min(r_rows[0], core.row0),
                    min(r_cols[0], core.col0),
                    max(r_rows[1], core.row1),
                    max(r_cols[1], core.col1),
                )
                out.append(ScaledBlock(len(out), core, read, work))
        return out

    def to_work(self, pixels: np.ndarray, valid: np.ndarray, read: Box, region: Box) -> tuple[np.ndarray, np.ndarray]:
        """Input pixels (3, H, W) uint8 and footprint of ``read`` -> the working ``region``'s pixels
        (uint8) and footprint (a working pixel is valid when valid input covers at least half of it)."""
        rows, cols = self._to_work
        r_index, r_weight = rows.taps(region.row0, region.row1)
        c_index, c_weight = cols.taps(region.col0, region.col1)
        r_index, c_index = r_index - read.row0, c_index - read.col0
        image = _apply_numpy(pixels.astype(np.float32), r_index, r_weight, 1)
        image = _apply_numpy(image, c_index, c_weight, 2)
        cover = _apply_numpy(_apply_numpy(valid.astype(np.float32), r_index, r_weight, 0), c_index, c_weight, 1)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8), cover >= 0.5

    def to_input(self, probs: torch.Tensor, work_core: Box, core: Box) -> torch.Tensor:
        """Working-grid probabilities (C, h, w) of ``work_core`` -> the input ``core``'s (C, H, W)."""
        rows, cols = self._to_input
        r_index, r_weight = rows.taps(core.row0, core.row1)
        c_index, c_weight = cols.taps(core.col0, core.col1)
        out = _apply_torch(probs, r_index - work_core.row0, r_weight, 1)
        return _apply_torch(out, c_index - work_core.col0, c_weight, 2)


def working_factor(input_gsd_m: float, working_gsd_m: float | None, mode: str, limit: float) -> float:
    """Working pixels per input pixel: 1.0 when off, unknown, within ``SAME_SCALE`` or beyond
    ``limit`` (a 0.5 m orthophoto is not a crack survey to enlarge 500 times: it runs as it is and
    the GSD check speaks). Rounded to three significant digits (``_snapped``): a change of the
    working GSD below 0.1 % that the model cannot see would make an inexact resampling grid."""
    if mode == "off" or not working_gsd_m or not input_gsd_m:
        return 1.0
    factor = input_gsd_m / working_gsd_m
    if max(factor, 1 / factor) > limit:
        return 1.0
    return _snapped(factor)


def views_on_grid(scales: Sequence[float], factor: float) -> tuple[float, tuple[float, ...]]:
    """The grid a survey runs on and its views there, for ``scales`` given relative to the model's
    working GSD and a ``factor`` (``working_factor``) from the input's grid to that GSD.

    Shrinking a finer input to the model's GSD and then enlarging it again for a 2x view throws the
    input's own detail away and blurs what is left (a 0.5 mm drone-wall mosaic with views 1,2:
    tolerant F1 0.60 that way, 0.68 this way). So the finest view reads the input's own pixels: a
    0.5 mm input with views 1,2 runs on its own grid with views 0.5 and 1, the same two looks at the
    ground. A single view, a coarser input, or views that would shrink a tile below ``MIN_SCALE``
    keep the working grid as it is.
    """
    finest = max(scales)
    if factor >= 1.0 or finest <= 1.0:
        return factor, tuple(scales)
    reach = min(1.0, factor * finest)
    for grid in (_snapped(reach), float(f"{reach:.3g}")):  # the input's own grid when within SAME_SCALE
        views = tuple(float(f"{scale * factor / grid:.3g}") for scale in scales)
        if min(views) >= MIN_SCALE:
            return grid, views
    return factor, tuple(scales)


def _snapped(factor: float) -> float:
    """1.0 within ``SAME_SCALE``, else three significant digits: GSDs are geodesic, and a
    projection's scale factor (UTM's 0.9996) must not make a 2:1 grid 1.9992:1."""
    if abs(math.log(factor)) <= math.log1p(SAME_SCALE):
        return 1.0
    return float(f"{factor:.3g}")
