"""Crack width from the image: integrated darkness across the centreline, to sub-pixel precision.

A segmentation mask says where a crack is, not how wide: masks are typically a pixel or two wider
than the crack on each side, and no mask is narrower than one pixel. The image says more. Across a
crack, the darkness below the local background level B integrates to (crack width) x (B - core
level C), however the crack is anti-aliased or blurred, so

    width = sum over a band around the crack of (B - I) / (B - C) / centreline length.

B is the median grey of a ring just outside the band; noise averages out over the band. C is the
crack's own core level (median grey on its centreline) when the crack is wide enough for its
centre pixels to be all crack (>= CORE_VISIBLE_PX); a thinner crack never shows its core level, so
it borrows the survey's core level (the median of those resolved cracks), and with none, its own
darkest level, which can only overstate its width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BAND_PX = 2  # the band reaches this far beyond the mask (covers anti-aliased edges)
RING_PX = (3, 6)  # the background ring: between these distances from the mask
CORE_VISIBLE_PX = 2.5
MIN_CONTRAST = 8.0  # grey levels between background and core below which nothing is measured
SQUARE = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Darkness:
    """What the image says about one crack, before the survey's core level is known."""

    background: float
    own_core: float
    darkness: float  # sum of (B - I) over the band, grey level x px
    length_px: float
    chunk_darkness: np.ndarray  # per centreline chunk, with the chunk's own background
    chunk_background: np.ndarray
    chunk_length_px: np.ndarray

    def width_px(self, core: float) -> float:
        """Mean width in pixels: the crack's darkness deficit over its length, against ``core``."""
        return self.darkness / (self.background - core) / self.length_px

    def chunk_widths_px(self, core: float) -> np.ndarray:
        """Width in pixels of each centreline chunk, against ``core``."""
        contrast = np.maximum(self.chunk_background - core, MIN_CONTRAST)
        return self.chunk_darkness / contrast / np.maximum(self.chunk_length_px, 1e-9)

    @property
    def own_width_px(self) -> float:
        """Mean width measured against this crack's own surroundings only."""
        return self.width_px(self.own_core)


def grey_levels(rgb: np.ndarray) -> np.ndarray:
    """Luminance (Rec. 601) of (bands, H, W) pixels; a single band is used as it is."""
    data = rgb.astype(np.float64)
    if data.shape[0] >= 3:
        return 0.299 * data[0] + 0.587 * data[1] + 0.114 * data[2]
    return data[0]


def measure_darkness(
    grey: np.ndarray,
    crack: np.ndarray,
    others: np.ndarray,
    skeleton: np.ndarray,
    chunk_of: np.ndarray,
    chunk_length_px: np.ndarray,
    length_px: float,
) -> Darkness | None:
    """Integrate one crack's darkness; None where the image shows no usable contrast.

    Args:
        grey: grey levels of the window; NaN where the image has no data.
        crack: this crack's mask pixels; ``others``: pixels of any other defect or nodata.
        skeleton: its centreline pixels; ``chunk_of``: chunk id per pixel on the skeleton (-1 off it).
    """
    band = ndimage.binary_dilation(crack, SQUARE, iterations=BAND_PX) & ~others
    inner = ndimage.binary_dilation(crack, SQUARE, iterations=RING_PX[0])
    ring = ndimage.binary_dilation(crack, SQUARE, iterations=RING_PX[1]) & ~inner & ~others
    valid = np.isfinite(grey)
    band &= valid
    ring &= valid
    if ring.sum() < 8 or not (skeleton & valid).any():
        return None
    background = float(np.median(grey[ring]))
    own_core = float(np.median(grey[skeleton & valid]))
    if background - own_core < MIN_CONTRAST:
        return None
    # every band/ring pixel belongs to the chunk of its nearest centreline pixel
    _, (rows, cols) = ndimage.distance_transform_edt(~skeleton, return_indices=True)
    nearest_chunk = chunk_of[rows, cols]
    chunks = len(chunk_length_px)
    chunk_background = np.full(chunks, background)
    for chunk in range(chunks):
        local = grey[ring & (nearest_chunk == chunk)]
        if local.size >= 8:
            chunk_background[chunk] = float(np.median(local))
    band_chunks = nearest_chunk[band]
    chunk_darkness = np.bincount(band_chunks, weights=chunk_background[band_chunks] - grey[band], minlength=chunks)
    return Darkness(
        background,
        own_core,
        float((background - grey[band]).sum()),
        length_px,
        chunk_darkness,
        chunk_background,
        np.asarray(chunk_length_px, float),
    )


def survey_core_level(measured: list[Darkness]) -> float | None:
    """The core level of the survey's resolved cracks (those wide enough to show it)."""
    cores = [d.own_core for d in measured if d.own_width_px >= CORE_VISIBLE_PX]
    return float(np.median(cores)) if cores else None


def core_for(darkness: Darkness, survey_core: float | None) -> float:
    """Its own core level when visible, else the survey's (never a brighter one than its own)."""
    if darkness.own_width_px >= CORE_VISIBLE_PX or survey_core is None:
        return darkness.own_core
    return min(darkness.own_core, survey_core)
