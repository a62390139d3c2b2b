"""Infer one block: cut its tiles from the block's region, run them, blend into the core."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.raster.grid import Block, Box

NODATA = 255
CONFIDENCE_NODATA = 0  # max probability is >= 1/C > 0 for every valid pixel, so 0 is free


@dataclass(frozen=True)
class BlockResult:
    """Class ids and confidence for a block's core (uint8, nodata 255 / 0)."""

    core: Box
    classes: np.ndarray
    confidence: np.ndarray

    def class_counts(self, num_classes: int) -> np.ndarray:
        valid = self.classes != NODATA
        return np.bincount(self.classes[valid].ravel(), minlength=num_classes)[:num_classes]


def fill_invalid(pixels: np.ndarray, valid: np.ndarray, fill: Sequence[float]) -> np.ndarray:
    """Replace nodata pixels with the training mean colour: MSAF pools over the whole tile."""
    if valid.all():
        return pixels
    out = pixels.copy()
    out[~valid] = np.round(np.asarray(fill)).astype(np.uint8)
    return out


def blend_block(block: Block, pixels: np.ndarray, valid: np.ndarray,
                predict: Callable[[np.ndarray], np.ndarray], weights: Callable[[Box], np.ndarray],
                fill: Sequence[float], batch: int) -> np.ndarray:
    """Weighted mean of the probabilities of every tile touching the core, in global tile order.

    The order and the per-pixel weights are the same whichever block a pixel falls in, so the
    result is bit-identical for any block size.

    Args:
        pixels: RGB uint8 of ``block.region``; valid: its footprint (nodata is filled first).
        predict: tiles (n, h, w, 3) uint8 -> probabilities (n, C, h, w) float32.
        weights: tile -> its per-pixel blend weights (h, w), strictly positive.
        batch: tiles handed to ``predict`` at a time (bounds memory).

    Returns:
        probabilities (C, core height, core width) float32.
    """
    core = block.core
    pixels = fill_invalid(pixels, valid, fill)
    acc: np.ndarray | None = None
    weight_sum = np.zeros((core.height, core.width), np.float32)
    tiles = block.tiles
    for start in range(0, len(tiles), batch):
        group = tiles[start:start + batch]
        probs = predict(np.stack([pixels[t.relative_to(block.region)] for t in group]))
        if acc is None:
            acc = np.zeros((probs.shape[1], core.height, core.width), np.float32)
        for tile, tile_probs in zip(group, probs, strict=True):
            inter = tile.intersection(core)
            src, dst = inter.relative_to(tile), inter.relative_to(core)
            w = weights(tile)[src]
            acc[(slice(None), *dst)] += tile_probs[(slice(None), *src)] * w
            weight_sum[dst] += w
    return acc / weight_sum


def infer_block(block: Block, pixels: np.ndarray, valid: np.ndarray,
                predict: Callable[[np.ndarray], np.ndarray], weights: Callable[[Box], np.ndarray],
                fill: Sequence[float], batch: int) -> BlockResult:
    """Blend a block (see ``blend_block``) and quantise: argmax class ids + confidence, nodata marked."""
    core = block.core
    core_valid = valid[core.relative_to(block.region)]
    if not core_valid.any():
        shape = (core.height, core.width)
        return BlockResult(core, np.full(shape, NODATA, np.uint8), np.full(shape, CONFIDENCE_NODATA, np.uint8))
    probs = blend_block(block, pixels, valid, predict, weights, fill, batch)
    classes = probs.argmax(axis=0).astype(np.uint8)
    confidence = np.clip(np.round(probs.max(axis=0) * 255), 1, 255).astype(np.uint8)
    classes[~core_valid] = NODATA
    confidence[~core_valid] = CONFIDENCE_NODATA
    return BlockResult(core, classes, confidence)
