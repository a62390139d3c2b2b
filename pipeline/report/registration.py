"""Align two epochs of one structure before their defects are compared.

Two flights' orthomosaics are rarely on the same ground to the millimetre: without ground control
they can be centimetres to metres apart, while cracks are matched within ``match_distance_m`` (2 cm).
Unaligned, every crack would be "new" and every old one "not found". The offset is measured on the
orthomosaics themselves (the texture of the concrete, its stains and formwork marks, is the same
ground in both flights), not on the defect maps, whose differences are what the comparison is for;
only where the orthomosaics are not in place are the two defect masks matched instead (the cracks
and joints both flights found are texture enough on a cracked or jointed wall, and where they are
not, the windows do not agree and nothing is applied).

Coarse to fine, in the working CRS: the ground both surveys imaged is read onto one grid of at most
COARSE_PX a side and matched whole (masked normalised cross-correlation, so nodata and the edges of
the footprints do not pull); then, at levels LEVEL_STEP times finer down to the coarser
orthomosaic's pixel, windows spread over the common ground are matched one by one (phase
correlation, sub-pixel), and a similarity transform (shift, rotation, scale: two orthomosaics of one
structure processed apart differ by a little of each, and 0.1° is 35 mm at the end of a 20 m span)
is fitted to the windows that agree. The windows are the check: the transform is applied only when
``min_windows`` of them, and at least half, agree within AGREE_PX; the residual is reported.
Lighting differs between flights, so images are compared high-passed (the low frequencies are the
sun and the exposure, not the ground).

Memory is flat in raster size: every read is a window, decimated to its grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import shapely
import shapely.affinity
from affine import Affine
from scipy.ndimage import binary_erosion, gaussian_filter
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep
from skimage.filters import window as taper
from skimage.registration import phase_cross_correlation

from pipeline.config import RegistrationConfig
from pipeline.raster.ground import linear_unit_m
from pipeline.raster.ground_image import GroundGrid, GroundImage

COARSE_PX = 512  # the whole common ground is first matched on a grid at most this many pixels a side
WINDOW_PX = 512  # side of a window at the finer levels
MIN_WINDOW_PX = 64  # common ground narrower than two such windows cannot be checked
LEVEL_STEP = 16  # each finer level's pixel is this much smaller (the coarser level is good to ~1 px)
WINDOWS = 16  # windows spread over the common ground per level
AGREE_PX = 1.5  # windows the transform fits within this distance agree
SHIFT_FITS_PX = 0.5  # RMS misfit of a plain shift below which no turn or scale is fitted
LOOSE = 8  # the first fit starts from the windows within LOOSE * AGREE_PX of the median shift
MAX_ROTATION_DEG = 2.0  # orthomosaics are north-up: a larger turn (or scale change) is another product
MAX_SCALE_CHANGE = 0.02
UNMOVED = Affine.identity()
MIN_VALID_SHARE = 0.9  # a window must be imaged in both epochs over this share of it
MIN_TEXTURE = 0.1  # and hold texture in both, at least this share of the level's typical window
UPSAMPLE = 20  # phase correlation's sub-pixel resolution: 1/20 px
HIGH_PASS_PX = 8.0  # Gaussian sigma of the lighting removed before matching


@dataclass(frozen=True)
class Registration:
    """How the new survey was moved onto the old one: a similarity transform (shift, rotation,
    scale) in the working CRS, and what it amounts to at the centre of the common ground."""

    transform: Affine = UNMOVED  # new survey -> old survey, working CRS units
    east_m: float = 0.0  # the shift at the centre of the common ground, ground metres
    north_m: float = 0.0
    rotation_deg: float = 0.0  # anticlockwise
    scale: float = 1.0
    applied: bool = False
    method: str = "off"  # "orthomosaics" or "masks" when measured; "off" when not asked; "none" when it could not be
    windows: int = 0  # windows matched at the finest level
    agreeing: int = 0  # of them, those the transform fits within AGREE_PX
    spread_m: float = math.nan  # RMS distance of the agreeing windows from the transform
    note: str = ""  # why it was not applied

    @property
    def offset_m(self) -> float:
        """How far the centre of the common ground was moved (or would have been), ground metres."""
        return math.hypot(self.east_m, self.north_m)

    def summary(self) -> str:
        """One line for the report and the CLI."""
        if not self.applied:
            return f"not registered: {self.note}" if self.note else "not registered"
        turned = (
            f", turned {self.rotation_deg:+.3f}° and scaled {(self.scale - 1) * 1e6:+.0f} ppm"
            if abs(self.rotation_deg) >= 0.0005 or abs(self.scale - 1) >= 5e-6
            else ""
        )
        return (
            f"new survey moved {self.east_m * 1000:+.1f} mm east, {self.north_m * 1000:+.1f} mm north{turned} onto "
            f"the old one ({self.offset_m * 1000:.1f} mm at the centre; {self.agreeing} of {self.windows} "
            f"{'orthomosaic' if self.method == 'orthomosaics' else 'defect-mask'} windows agree, residual "
            f"{self.spread_m * 1000:.1f} mm)"
        )

    def move(self, frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        """``frame`` (in the working CRS it was measured in) moved onto the old survey; as it is when
        not applied."""
        return self._moved(frame, self.transform)

    def move_back(self, frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        """``frame`` (in the old survey's frame) where the new survey has it: the inverse of ``move``."""
        return self._moved(frame, ~self.transform)

    def move_geometry(self, geometry: BaseGeometry | None) -> BaseGeometry | None:
        """A geometry in the working CRS moved onto the old survey."""
        if geometry is None or not self.applied:
            return geometry
        return shapely.affinity.affine_transform(geometry, _shapely_order(self.transform))

    def _moved(self, frame: gpd.GeoDataFrame, transform: Affine) -> gpd.GeoDataFrame:
        if not self.applied or not len(frame):
            return frame
        return frame.set_geometry(frame.geometry.affine_transform(_shapely_order(transform)))

    def as_row(self) -> dict[str, object]:
        """The registration as one table row (changes.gpkg's ``registration`` layer)."""
        return {
            "applied": self.applied,
            "method": self.method,
            "shift_east_m": self.east_m,
            "shift_north_m": self.north_m,
            "offset_m": self.offset_m,
            "rotation_deg": self.rotation_deg,
            "scale": self.scale,
            "windows": self.windows,
            "agreeing": self.agreeing,
            "spread_m": self.spread_m,
            "note": self.note,
        }


def _shapely_order(transform: Affine) -> list[float]:
    """An affine transform as shapely's ``affine_transform`` takes it: [a, b, d, e, xoff, yoff]."""
    return [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]


def _fit(new: np.ndarray, old: np.ndarray) -> Affine:
    """The similarity transform taking ``new`` points onto ``old`` (least squares about their
    centroid); a plain shift from fewer than 4 points."""
    centre = old.mean(axis=0)
    p, q = new - centre, old - centre
    if len(p) >= 4:
        rows = np.zeros((2 * len(p), 4))
        rows[0::2] = np.column_stack([p[:, 0], -p[:, 1], np.ones(len(p)), np.zeros(len(p))])
        rows[1::2] = np.column_stack([p[:, 1], p[:, 0], np.zeros(len(p)), np.ones(len(p))])
        a, b, tx, ty = np.linalg.lstsq(rows, q.ravel(), rcond=None)[0]
    else:
        (a, b), (tx, ty) = (1.0, 0.0), (q - p).mean(axis=0)
    around = Affine.translation(*centre)
    return around @ Affine(a, -b, tx, b, a, ty) @ ~around


def _apply(transform: Affine, points: np.ndarray) -> np.ndarray:
    """``transform`` applied to (n, 2) points."""
    x, y, t = points[:, 0], points[:, 1], transform
    return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])


def _robust_fit(new: np.ndarray, old: np.ndarray, tolerance: float) -> tuple[Affine, np.ndarray]:
    """The transform most windows agree on, and which agree (within ``tolerance``): started from the
    windows near the median shift (a window without texture matches anywhere), refitted on the
    windows the transform fits. A shift alone where it fits the agreeing windows as well as
    SHIFT_FITS_PX (a turn and scale fitted to noise would only add error away from the windows)."""
    moved = old - new
    keep = np.hypot(*(moved - np.median(moved, axis=0)).T) <= LOOSE * tolerance
    transform = Affine.identity()
    for _ in range(5):
        if not keep.any():
            break
        transform = _fit(new[keep], old[keep])
        fits = np.hypot(*(_apply(transform, new) - old).T) <= tolerance
        if (fits == keep).all():
            break
        keep = fits
    if keep.any():
        shift = Affine.translation(*(old[keep] - new[keep]).mean(axis=0))
        misfit = np.hypot(*(_apply(shift, new[keep]) - old[keep]).T)
        if np.sqrt((misfit**2).mean()) <= SHIFT_FITS_PX / AGREE_PX * tolerance:
            transform = shift
    return transform, keep


def _texture(luminance: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """High-passed, normalised luminance (zero off the ground), the ground left after the filter's
    edge is trimmed, and how much texture there was (the high-pass's standard deviation): lighting
    differs between flights, the ground's texture does not."""
    if not valid.any():
        return np.zeros_like(luminance), valid, 0.0
    filled = np.where(valid, luminance, luminance[valid].mean())
    detail = luminance - gaussian_filter(filled, HIGH_PASS_PX)
    inner = binary_erosion(valid, iterations=2)
    spread = float(detail[inner].std()) if inner.any() else 0.0
    detail = np.where(inner, detail / spread if spread > 0 else 0.0, 0.0)
    return detail.astype(np.float32), inner, spread


@cache
def _hann(size: int) -> np.ndarray:
    """The taper that keeps a window's edges out of its phase correlation (made once per size)."""
    return taper("hann", (size, size)).astype(np.float32)


def _levels(fine: float, extent: float) -> list[float]:
    """Pixel sizes from the whole-ground grid down to ``fine``; at least one window level."""
    levels = [max(fine, extent / COARSE_PX)]
    while levels[-1] > fine * 1.001:
        levels.append(max(fine, levels[-1] / LEVEL_STEP))
    return levels if len(levels) > 1 else levels * 2


def _window_centres(common: BaseGeometry, size: float) -> list[tuple[float, float]]:
    """About WINDOWS centres on a lattice over the common ground, keeping windows that lie inside it."""
    left, bottom, right, top = common.bounds
    width, height = right - left, top - bottom
    cols = max(1, round(math.sqrt(WINDOWS * width / max(height, 1e-12))))
    rows = max(1, round(WINDOWS / cols))
    centres = [
        (left + (c + 0.5) * width / cols, bottom + (r + 0.5) * height / rows) for r in range(rows) for c in range(cols)
    ]
    inside = prep(common.buffer(size * 0.01))
    return [
        (x, y)
        for x, y in centres
        if inside.contains(shapely.box(x - size / 2, y - size / 2, x + size / 2, y + size / 2))
    ]


def register_epochs(
    old_image: Path | None,
    new_image: Path | None,
    crs: pyproj.CRS,
    common: BaseGeometry | None,
    cfg: RegistrationConfig,
    masks: tuple[Path, Path] | None = None,
) -> Registration:
    """The transform (shift, rotation, scale) that puts the new survey on the old one, measured on
    their orthomosaics in ``crs`` (projected) within the ground both imaged; not applied, with the
    reason, when it cannot be measured or checked.

    Without both orthomosaics it is measured on the surveys' ``masks`` (old, new) where given: the
    cracks and joints both flights found are texture enough on a cracked or jointed wall, and the
    windows' agreement refuses it on ground with too few (a sound deck)."""
    if cfg.mode == "off":
        return Registration(note="report.registration.mode is off")
    if common is None or common.is_empty:
        return Registration(method="none", note="no common ground to match")
    missing = [name for name, path in (("old", old_image), ("new", new_image)) if path is None]
    if not missing:
        assert old_image is not None and new_image is not None
        return _measure(GroundImage(old_image, crs), GroundImage(new_image, crs), common, cfg, "orthomosaics")
    why = f"the {' and '.join(missing)} survey's orthomosaic is not in place (pass --old-image / --new-image)"
    if masks is None:
        return Registration(method="none", note=why)
    found = _measure(GroundImage(masks[0], crs), GroundImage(masks[1], crs), common, cfg, "masks")
    return found if found.applied else replace(found, note=f"{found.note}; on the defect masks, as {why}")


def _measure(
    old: GroundImage, new: GroundImage, common: BaseGeometry, cfg: RegistrationConfig, method: str
) -> Registration:
    """``register_epochs`` on two images of the ground (orthomosaics, or defect masks)."""
    crs = old.crs
    fine = max(old.pixel(), new.pixel())
    left, bottom, right, top = common.bounds
    levels = _levels(fine, max(right - left, top - bottom))
    metres = linear_unit_m(crs)
    limit = cfg.max_shift_m / metres

    def refused(note: str, windows: int = 0, agreeing: int = 0) -> Registration:
        return Registration(method="none", windows=windows, agreeing=agreeing, note=note)

    coarse = GroundGrid.covering((left, bottom, right, top), levels[0])
    reference, reference_valid, _ = _texture(*old.read(coarse))
    moving, moving_valid, _ = _texture(*new.read(coarse))
    if reference_valid.sum() < MIN_WINDOW_PX**2 or moving_valid.sum() < MIN_WINDOW_PX**2:
        return refused("the orthomosaics have too little common ground to match")
    (rows, cols), _, _ = phase_cross_correlation(
        reference, moving, reference_mask=reference_valid, moving_mask=moving_valid, overlap_ratio=0.3
    )
    transform = Affine.translation(cols * levels[0], -rows * levels[0])
    centre = common.centroid.coords[0]

    def offset(transform: Affine) -> float:
        x, y = transform @ centre
        return math.hypot(x - centre[0], y - centre[1])

    windows = agreeing = 0
    spread = math.nan
    for res in levels[1:]:
        if offset(transform) > limit:
            break
        size = min(WINDOW_PX, math.floor(min(right - left, top - bottom) / res / 2))
        if size < MIN_WINDOW_PX:
            return refused("the common ground is too small to check a shift on independent windows")
        candidates = []
        for x, y in _window_centres(common, size * res):
            grid = GroundGrid.centred(x, y, size, res)
            seen_x, seen_y = ~transform @ (x, y)  # where the new survey shows this ground
            before, before_valid = old.read(grid)
            after, after_valid = new.read(grid.moved(seen_x - x, seen_y - y))
            if before_valid.mean() >= MIN_VALID_SHARE and after_valid.mean() >= MIN_VALID_SHARE:
                candidates.append(
                    ((x, y), (seen_x, seen_y), _texture(before, before_valid), _texture(after, after_valid))
                )
        # a window without texture in either epoch matches anywhere: an empty stretch of a defect
        # mask, a uniform surface; left out rather than let it agree with whatever was estimated
        typical = np.percentile([min(a[2], b[2]) for *_, a, b in candidates], 75) if candidates else 0.0
        new_points, old_points = [], []
        for (x, y), (seen_x, seen_y), before_texture, after_texture in candidates:
            if min(before_texture[2], after_texture[2]) <= MIN_TEXTURE * typical:
                continue
            (dr, dc), _, _ = phase_cross_correlation(
                before_texture[0] * _hann(size), after_texture[0] * _hann(size), upsample_factor=UPSAMPLE
            )
            # the new survey's point of (x, y); in float64 (the shift comes in float32, a UTM northing does not fit)
            new_points.append((seen_x - float(dc) * res, seen_y + float(dr) * res))
            old_points.append((x, y))
        windows = len(new_points)
        if not windows:
            return refused(f"no window at {res * metres * 1000:.3g} mm/px is imaged, with texture, in both epochs")
        found_new, found_old = np.array(new_points), np.array(old_points)
        transform, fits = _robust_fit(found_new, found_old, AGREE_PX * res)
        agreeing = int(fits.sum())
        if agreeing < max(cfg.min_windows, math.ceil(windows / 2)):
            return refused(
                f"only {agreeing} of {windows} windows at {res * metres * 1000:.3g} mm/px agree on a shift "
                "(the orthomosaics do not match well enough: other ground, or changed beyond recognition)",
                windows,
                agreeing,
            )
        misfit = _apply(transform, found_new[fits]) - found_old[fits]
        spread = float(np.sqrt((misfit**2).sum(axis=1).mean()))
    if offset(transform) > limit:
        return refused(
            f"the best match lies {offset(transform) * metres:.3g} m away, beyond "
            f"report.registration.max_shift_m ({cfg.max_shift_m} m)"
        )
    rotation = math.degrees(math.atan2(transform.d, transform.a))
    scale = math.hypot(transform.a, transform.d)
    if abs(rotation) > MAX_ROTATION_DEG or abs(scale - 1) > MAX_SCALE_CHANGE:
        return refused(
            f"the orthomosaics differ by a turn of {rotation:.2f}° and a scale of {scale:.4f}: not two north-up "
            "orthomosaics of the same ground"
        )
    moved_x, moved_y = transform @ centre
    return Registration(
        transform=transform,
        east_m=float((moved_x - centre[0]) * metres),
        north_m=float((moved_y - centre[1]) * metres),
        rotation_deg=rotation,
        scale=scale,
        applied=True,
        method=method,
        windows=windows,
        agreeing=agreeing,
        spread_m=spread * metres,
    )
