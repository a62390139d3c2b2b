"""Crack width from the image: integrated darkness across the centreline, to sub-pixel precision.

A segmentation mask says where a crack is, not how wide: masks are typically a pixel or two wider
than the crack on each side, and no mask is narrower than one pixel. The image says more. Across a
crack, the darkness below the local background level B integrates to (crack width) x (B - core
level C), however the crack is anti-aliased or blurred, so

    width = sum over a band around the crack of (B - I) / (B - C) / centreline length.

B is the grouped median (``grouped_median``) of a ring just outside the band (widened while the
ring is still darker inside than outside: a mask narrower than its blurred crack); noise averages
out over the band. Each chunk's own background is the plain median of its part of the ring: read
as grouped medians too, they tipped one more unchanged crack into a false trend in two of the
history bench's three sets.

The hard part is C. Blur preserves the integral but lightens a thin crack's darkest pixel far
above its real core level, so a thin crack measured against its own darkest level comes out 2-6x
too wide (a blurred line's own-core width never falls below ~2.5 PSF sigmas, whatever its real
width). What carries from crack to crack in one survey is the *contrast ratio* of a crack core to
its surroundings, (B - C) / B: the same shadow under the same light. It is learnt from the survey's
truly wide cracks (own-core width >= RESOLVED_PX, beyond what blur makes of any thin line), whose
darkest level is their core, read across the crack (the darkest pixel near each centreline pixel,
not the centreline pixel itself, which can be the lighter of two centre pixels). Every crack's
contrast is then the larger of its own darkest-level contrast and the survey's ratio times its
own background: blur can only lighten a core, never darken it. A survey without any wide crack has
no ratio: its widths are measured against each crack's own darkest level, an upper bound, and
say so. A crack without measurable contrast has no image width at all (`unmeasured`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BAND_PX = 2  # the darkest level is looked for this far beyond the mask
RING_PX = (3, 6)  # the background ring: between these distances from the mask; the band: up to it
GUARD_PX = 4  # how far band and ring may be widened while the ring is still crack
REACH_PX = RING_PX[1] + GUARD_PX  # the farthest pixel a measurement reads beyond the mask
RESOLVED_PX = 5.5  # own-core width beyond what blur (PSF sigma <= 1.5 px, pixel, JPEG) makes of a thin line
CROSS_PX = 2  # the darkest pixel of a cross-section: within this many px of the centreline
MIN_CONTRAST = 8.0  # grey levels between background and core below which nothing is measured

WIDTH_FROM_IMAGE = "image"
WIDTH_UPPER_BOUND = "image (upper bound)"  # no wide crack in the survey to learn the core from
WIDTH_FROM_MASK = "mask"  # no image given
WIDTH_UNMEASURED = "none"  # the image shows no measurable contrast


@dataclass(frozen=True)
class Darkness:
    """What the image says about one crack, before the survey's contrast ratio is known."""

    background: float
    darkest: float  # median over the centreline of each cross-section's darkest (smoothed) level
    darkness: float  # sum of (B - I) over the band, grey level x px
    length_px: float
    chunk_darkness: np.ndarray  # per centreline chunk, with the chunk's own background
    chunk_background: np.ndarray
    chunk_length_px: np.ndarray

    @property
    def own_contrast(self) -> float:
        """Background minus the crack's own darkest level (less than the real contrast under blur)."""
        return self.background - self.darkest

    @property
    def own_width_px(self) -> float:
        """Mean width against this crack's own darkest level: exact when resolved, else too wide."""
        return self.darkness / self.own_contrast / self.length_px

    @property
    def resolved(self) -> bool:
        """Wide enough that its darkest level is its core: no thin blurred line measures this wide."""
        return self.own_width_px >= RESOLVED_PX

    @property
    def own_ratio(self) -> float:
        """Its own core contrast as a share of its background: (B - darkest) / B."""
        return self.own_contrast / self.background


@dataclass(frozen=True)
class CoreModel:
    """A survey's crack-core contrast ratio (B - C) / B, from its widest resolved cracks."""

    ratio: float | None
    resolved: int  # how many cracks it was learnt from

    @classmethod
    def learn(cls, measured: list[Darkness]) -> CoreModel:
        """The median ratio of the widest quarter of the resolved cracks (the cores blur lightens least)."""
        resolved = sorted((d for d in measured if d.resolved), key=lambda d: d.own_width_px)
        if not resolved:
            return cls(None, 0)
        widest = resolved[3 * len(resolved) // 4 :]
        return cls(float(np.median([d.own_ratio for d in widest])), len(resolved))

    def contrast(self, background: np.ndarray | float, darkest: float) -> np.ndarray:
        """B - C: the own contrast, or the survey's where that is larger (blur only lightens a core)."""
        background = np.asarray(background, float)
        own = background - darkest
        if self.ratio is not None:
            own = np.maximum(own, self.ratio * background)
        return np.maximum(own, MIN_CONTRAST)

    def widths(self, darkness: Darkness) -> tuple[float, np.ndarray, str]:
        """(mean width px, width px per chunk, method) of one crack."""
        mean = darkness.darkness / float(self.contrast(darkness.background, darkness.darkest)) / darkness.length_px
        chunk_contrast = self.contrast(darkness.chunk_background, darkness.darkest)
        chunks = darkness.chunk_darkness / chunk_contrast / np.maximum(darkness.chunk_length_px, 1e-9)
        exact = self.ratio is not None or darkness.resolved
        return mean, chunks, WIDTH_FROM_IMAGE if exact else WIDTH_UPPER_BOUND


def _band_and_ring(
    grey: np.ndarray, reach: np.ndarray, usable: np.ndarray, darkest: float
) -> tuple[np.ndarray, np.ndarray]:
    """Band and background ring, both widened while the ring's inner half is darker than its outer
    half: the blurred crack reaches beyond the band (a mask narrower than the crack)."""
    for extra in range(GUARD_PX + 1):
        inner_px, outer_px = RING_PX[0] + extra, RING_PX[1] + extra
        ring = (reach > inner_px) & (reach <= outer_px) & usable
        middle = (inner_px + outer_px + 1) / 2
        near, far = grey[ring & (reach <= middle)], grey[ring & (reach > middle)]
        if extra == GUARD_PX or near.size < 8 or far.size < 8:
            break
        far_level = float(np.median(far))
        if float(np.median(near)) >= far_level - max(1.5, 0.03 * (far_level - darkest)):
            break
    return (reach <= inner_px) & usable, ring


def _darkest_across(grey: np.ndarray, band: np.ndarray, distance: np.ndarray) -> float:
    """The darkest level of the crack's mean cross-section: the median grey at each distance (in
    half pixels, up to CROSS_PX) from the centreline, darkest of those. Read across the crack, not
    on the centreline alone (which can sit on the lighter of two centre pixels); medians over the
    whole length, so sensor noise does not drag it darker as a per-pixel minimum would."""
    near = band & (distance <= CROSS_PX) & np.isfinite(grey)
    steps = np.round(distance[near] * 2).astype(np.int64)
    levels = grey[near]
    medians = [np.median(levels[steps == step]) for step in np.unique(steps) if (steps == step).sum() >= 4]
    return float(min(medians)) if medians else float("nan")


def grouped_median(levels: np.ndarray) -> float:
    """The median of grey levels, interpolated within the run of pixels that share it (the grouped
    median: each level stands for the unit interval around it). As robust as a median and as
    unmoved by a monotone change of light, but not stuck on whole grey levels: a median of 8-bit
    greys moves in steps of one, and one grey level of background is ~0.06 px of a 3-px crack."""
    values = np.ravel(levels)
    median = float(np.median(values))
    below, at = int((values < median).sum()), int((values == median).sum())
    if at == 0:  # between two levels already
        return median
    return median - 0.5 + (values.size / 2 - below) / at


def _chunk_medians(chunk_ids: np.ndarray, levels: np.ndarray, chunks: int, default: float) -> np.ndarray:
    """The median level of each chunk's pixels (``default`` where it has fewer than 8): pixels sorted
    by chunk once, not the window searched once per chunk (a crack network of thousands of chunks
    spans a window of millions of pixels)."""
    order = np.argsort(chunk_ids, kind="stable")
    ids, values = chunk_ids[order], levels[order]
    starts = np.searchsorted(ids, np.arange(chunks + 1))
    medians = np.full(chunks, default)
    for chunk in np.flatnonzero(np.diff(starts) >= 8).tolist():
        medians[chunk] = float(np.median(values[starts[chunk] : starts[chunk + 1]]))
    return medians


def measure_darkness(
    grey: np.ndarray,
    crack: np.ndarray,
    others: np.ndarray,
    skeleton: np.ndarray,
    chunk_of: np.ndarray,
    chunk_length_px: np.ndarray,
    length_px: float,
    guide: np.ndarray | None = None,
) -> Darkness | None:
    """Integrate one crack's darkness; None where the image shows no usable contrast.

    Args:
        grey: grey levels of the window; NaN where the image has no data.
        crack: this crack's mask pixels; ``others``: pixels of any other defect or nodata.
        skeleton: its centreline pixels; ``chunk_of``: chunk id per pixel on the skeleton (-1 off it).
        guide: another image of the same ground (same window, NaN where it has no data) whose band
            and ring are used instead of this image's own: two flights read over the same band.
    """
    valid = np.isfinite(grey)
    usable = valid & ~others
    reach = ndimage.distance_transform_cdt(~crack, metric="chessboard")  # px beyond the mask (0 inside)
    if not (skeleton & valid).any():
        return None
    # distance to, and nearest pixel of, the centreline: for the cross-section and the chunks
    distance, (rows, cols) = ndimage.distance_transform_edt(~skeleton, return_indices=True)
    # the cross-section is read from the centreline pixels with data (a second transform only there)
    cross = distance if valid[skeleton].all() else ndimage.distance_transform_edt(~(skeleton & valid))
    darkest = _darkest_across(grey, (reach <= BAND_PX) & usable, cross)
    if guide is None:
        band, ring = _band_and_ring(grey, reach, usable, darkest)
    else:
        guide_darkest = _darkest_across(guide, (reach <= BAND_PX) & usable, cross)
        band, ring = _band_and_ring(guide, reach, usable, guide_darkest)
    if ring.sum() < 8 or not np.isfinite(darkest):
        return None
    background = grouped_median(grey[ring])
    if background - darkest < MIN_CONTRAST:
        return None
    # every band/ring pixel belongs to the chunk of its nearest centreline pixel
    nearest_chunk = chunk_of[rows, cols]
    chunks = len(chunk_length_px)
    chunk_background = _chunk_medians(nearest_chunk[ring], grey[ring], chunks, background)
    band_chunks = nearest_chunk[band]
    chunk_darkness = np.bincount(band_chunks, weights=chunk_background[band_chunks] - grey[band], minlength=chunks)
    return Darkness(
        background,
        darkest,
        float((background - grey[band]).sum()),
        length_px,
        chunk_darkness,
        chunk_background,
        np.asarray(chunk_length_px, float),
    )
