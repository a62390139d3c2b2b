"""Fill a tile's nodata pixels by mirroring its own valid pixels across the footprint edge.

Orthomosaics have irregular footprints. Filling nodata with one flat colour (the training mean)
leaves a sharp step along the footprint edge, which a crack model reads as a crack. Crack pixels
within 8 px of the edge with the shipped model (``bench/footprint_edge.py``: a 1024² mosaic of CFD
validation photos, 408 true): flat mean colour 3,149 (tolerant crack F1 0.680), mirror 511 (0.727).
Push-pull interpolation, tried first, is smooth but stops the texture at the edge: on the tests'
700×530 mosaic it left 1,769 (599 true) where the mirror leaves 686.

Each nodata pixel takes the value of its reflection through the nearest valid pixel (or that
nearest pixel where the reflection is nodata too). It is computed per tile from the tile alone,
so a tile's input, and the mask, do not depend on the block size.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def mirror_sources(valid: np.ndarray) -> np.ndarray:
    """For every pixel of a tile with both valid and nodata pixels, the flat index (int32, same shape)
    of the pixel it takes its value from: itself where valid (its nearest valid pixel is itself, and
    so is its reflection), else its reflection through the nearest valid pixel, or that pixel where
    the reflection is nodata too.

    Whole-tile arithmetic on the distance transform's int32 indices, in place: 4x cheaper than
    picking the nodata pixels out first (0.3 ms against 1.3 ms per 256² edge tile on one core)."""
    height, width = valid.shape
    # indices only (no distances): the nearest valid pixel of each pixel, as int32 row and column
    near_row, near_col = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    mirror = 2 * near_row
    mirror -= np.arange(height, dtype=np.int32)[:, None]
    np.clip(mirror, 0, height - 1, out=mirror)
    mirror *= width
    mirror_col = 2 * near_col
    mirror_col -= np.arange(width, dtype=np.int32)[None, :]
    np.clip(mirror_col, 0, width - 1, out=mirror_col)
    mirror += mirror_col
    near_row *= width
    near_row += near_col
    usable = valid.ravel().take(mirror)
    return np.where(usable.reshape(valid.shape), mirror, near_row)


def mirror_fill(image: torch.Tensor, valid: np.ndarray, fallback: torch.Tensor) -> torch.Tensor:
    """``image`` (3, H, W) with its nodata pixels (``valid`` False; the runner passes its host array,
    no device round trip) filled; ``fallback`` (3,) is used when the tile has no valid pixel at all.
    Pixels are only moved (one gather of the whole tile), so the tile runner fills its uint8 tiles and
    converts after; on a GPU the gather runs on the device and only the indices go up."""
    if valid.all():
        return image
    if not valid.any():
        return fallback.view(3, 1, 1).expand_as(image).clone()
    sources = mirror_sources(valid).ravel()
    if image.device.type == "cpu":  # numpy's take: twice as fast as torch's index_select here
        pixels = np.ascontiguousarray(image.numpy()).reshape(3, -1)
        return torch.from_numpy(pixels.take(sources, axis=1).reshape(image.shape))
    return gather_on_device(image, sources)


def gather_on_device(image: torch.Tensor, sources: np.ndarray) -> torch.Tensor:
    """The gather where ``image`` lives (a GPU): only the indices go up."""
    index = torch.from_numpy(sources).to(image.device)
    return image.reshape(3, -1).index_select(1, index).reshape(image.shape)
