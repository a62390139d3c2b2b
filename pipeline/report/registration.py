"""Align two epochs of one structure before their defects are compared.

Two flights' orthomosaics are rarely on the same ground to the millimetre: without ground control
they can be centimetres to metres apart, while cracks are matched within ``match_distance_m`` (2 cm).
Unaligned, every crack would be "new" and every old one "not found". The offset is measured on the
orthomosaics themselves (the texture of the concrete, its stains and formwork marks, is the same
ground in both flights), never on the defect maps, whose differences are what the comparison is for.

Coarse to fine, in the working CRS: the ground both surveys imaged is read onto one grid of at most
COARSE_PX a side and matched whole (masked normalised cross-correlation, so nodata and the edges of
the footprints do not pull); then, at levels LEVEL_STEP times finer down to the coarser
orthomosaic's pixel, windows spread over the common ground are matched one by one (phase
correlation, sub-pixel) and the mean of those that agree moves the estimate. The windows are the
check: the shift is applied only when ``min_windows`` of them, and at least half, agree within
AGREE_PX; their spread is reported, since a rotation or scale difference between the epochs shows
there and not in the mean. Lighting differs between flights, so images are compared high-passed
(the low frequencies are the sun and the exposure, not the ground).

Memory is flat in raster size: every read is a window, decimated to its grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.warp import calculate_default_transform, reproject, transform_bounds
from rasterio.windows import Window, from_bounds
from scipy.ndimage import binary_erosion, gaussian_filter
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep
from skimage.filters import window as taper
from skimage.registration import phase_cross_correlation

from pipeline.config import RegistrationConfig
from pipeline.raster.ground import linear_unit_m
from pipeline.raster.luminance import grey_levels
from pipeline.raster.source import file_bit_depth_scale, rgb_bands, to_uint8
from pipeline.raster.trust import driver_for

COARSE_PX = 512  # the whole common ground is first matched on a grid at most this many pixels a side
WINDOW_PX = 512  # side of a window at the finer levels
MIN_WINDOW_PX = 64  # common ground narrower than two such windows cannot be checked
LEVEL_STEP = 16  # each finer level's pixel is this much smaller (the coarser level is good to ~1 px)
WINDOWS = 16  # windows spread over the common ground per level
AGREE_PX = 1.5  # windows within this distance of their median agree
MIN_VALID_SHARE = 0.9  # a window must be imaged in both epochs over this share of it
UPSAMPLE = 20  # phase correlation's sub-pixel resolution: 1/20 px
HIGH_PASS_PX = 8.0  # Gaussian sigma of the lighting removed before matching


@dataclass(frozen=True)
class Registration:
    """How the new survey was moved onto the old one: east and north in ground metres."""

    east_m: float = 0.0
    north_m: float = 0.0
    applied: bool = False
    method: str = "off"  # "orthomosaics" when measured; "off" when not asked; "none" when it could not be
    windows: int = 0  # windows matched at the finest level
    agreeing: int = 0
    spread_m: float = math.nan  # RMS distance of the agreeing windows from their mean
    note: str = ""  # why it was not applied, or what to watch

    @property
    def offset_m(self) -> float:
        """How far the new survey was moved (or would have been), ground metres."""
        return math.hypot(self.east_m, self.north_m)

    def summary(self) -> str:
        """One line for the report and the CLI."""
        if self.applied:
            return (
                f"new survey moved {self.east_m * 1000:+.1f} mm east, {self.north_m * 1000:+.1f} mm north onto the "
                f"old one ({self.offset_m * 1000:.1f} mm; {self.agreeing} of {self.windows} orthomosaic windows agree, "
                f"spread {self.spread_m * 1000:.1f} mm)"
            )
        return f"not registered: {self.note}" if self.note else "not registered"

    def move(self, frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        """``frame`` (in a projected CRS) moved onto the old survey; unchanged when not applied."""
        if not self.applied or not len(frame):
            return frame
        units = 1 / linear_unit_m(frame.crs)
        return frame.set_geometry(frame.geometry.translate(self.east_m * units, self.north_m * units))

    def move_geometry(self, geometry: BaseGeometry | None, crs: pyproj.CRS) -> BaseGeometry | None:
        """A geometry in ``crs`` moved onto the old survey."""
        if geometry is None or not self.applied:
            return geometry
        units = 1 / linear_unit_m(crs)
        return shapely.affinity.translate(geometry, self.east_m * units, self.north_m * units)

    def as_row(self) -> dict[str, object]:
        """The registration as one table row (changes.gpkg's ``registration`` layer)."""
        return {
            "applied": self.applied,
            "method": self.method,
            "shift_east_m": self.east_m,
            "shift_north_m": self.north_m,
            "offset_m": self.offset_m,
            "windows": self.windows,
            "agreeing": self.agreeing,
            "spread_m": self.spread_m,
            "note": self.note,
        }


@dataclass(frozen=True)
class _Grid:
    """A north-up grid of the working CRS: where an image is read to be matched."""

    transform: Affine
    shape: tuple[int, int]  # rows, cols

    @classmethod
    def centred(cls, x: float, y: float, size: int, res: float) -> _Grid:
        return cls(Affine(res, 0, x - size * res / 2, 0, -res, y + size * res / 2), (size, size))

    @property
    def res(self) -> float:
        return self.transform.a

    def moved(self, east: float, north: float) -> _Grid:
        """The grid whose pixel (r, c) lies (east, north) from this one's."""
        return _Grid(Affine.translation(east, north) @ self.transform, self.shape)

    def box(self) -> BaseGeometry:
        return shapely.box(*array_bounds(*self.shape, self.transform))


@dataclass(frozen=True)
class _Image:
    """One epoch's orthomosaic, matched in the working CRS."""

    path: Path
    crs: pyproj.CRS

    def pixel(self) -> float:
        """The image's pixel, in working CRS units."""
        with rasterio.open(self.path, driver=driver_for(str(self.path), "vrt")) as src:
            transform, _, _ = calculate_default_transform(src.crs, self.crs, src.width, src.height, *src.bounds)
        return max(abs(transform.a), abs(transform.e))

    def read(self, grid: _Grid) -> tuple[np.ndarray, np.ndarray]:
        """Luminance (float32) and validity on ``grid``: the source window read decimated to about
        the grid's pixel, then warped onto it (bilinear)."""
        empty = np.zeros(grid.shape, np.float32), np.zeros(grid.shape, bool)
        with rasterio.open(self.path, driver=driver_for(str(self.path), "vrt")) as src:
            left, bottom, right, top = transform_bounds(
                self.crs, src.crs, *array_bounds(*grid.shape, grid.transform), densify_pts=21
            )
            wanted = from_bounds(left, bottom, right, top, transform=src.transform)
            col0, row0 = max(0, math.floor(wanted.col_off)), max(0, math.floor(wanted.row_off))
            col1 = min(src.width, math.ceil(wanted.col_off + wanted.width))
            row1 = min(src.height, math.ceil(wanted.row_off + wanted.height))
            if col1 <= col0 or row1 <= row0:
                return empty
            window = Window(col0, row0, col1 - col0, row1 - row0)
            step = max(1, math.floor(wanted.width / grid.shape[1]))
            shape = (max(1, math.ceil(window.height / step)), max(1, math.ceil(window.width / step)))
            band_numbers = rgb_bands(src) if src.count >= 3 else (1,)
            bands = src.read(
                band_numbers, window=window, out_shape=(len(band_numbers), *shape), resampling=Resampling.average
            )
            valid = src.dataset_mask(window=window, out_shape=shape, resampling=Resampling.nearest) > 0
            if bands.dtype != np.uint8:
                bands = to_uint8(bands, file_bit_depth_scale(src))
            read_transform = src.window_transform(window) @ Affine.scale(
                window.width / shape[1], window.height / shape[0]
            )
            source_crs = src.crs
        luminance, on_grid = empty[0].copy(), np.zeros(grid.shape, np.uint8)
        common = {
            "src_transform": read_transform,
            "src_crs": source_crs,
            "dst_transform": grid.transform,
            "dst_crs": self.crs,
        }
        reproject(grey_levels(bands).astype(np.float32), luminance, resampling=Resampling.bilinear, **common)
        reproject(valid.astype(np.uint8), on_grid, resampling=Resampling.nearest, dst_nodata=0, **common)
        return luminance, on_grid.astype(bool)


def _texture(luminance: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """High-passed, normalised luminance (zero off the ground) and the ground left after the filter's
    edge is trimmed: lighting differs between flights, the ground's texture does not."""
    if not valid.any():
        return np.zeros_like(luminance), valid
    filled = np.where(valid, luminance, luminance[valid].mean())
    detail = luminance - gaussian_filter(filled, HIGH_PASS_PX)
    inner = binary_erosion(valid, iterations=2)
    spread = detail[inner].std() if inner.any() else 0.0
    detail = np.where(inner, detail / spread if spread > 0 else 0.0, 0.0)
    return detail.astype(np.float32), inner


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
) -> Registration:
    """The shift that puts the new survey on the old one, measured on their orthomosaics in ``crs``
    (projected), within the ground both imaged; not applied, with the reason, when it cannot be
    measured or checked."""
    if cfg.mode == "off":
        return Registration(note="report.registration.mode is off")
    missing = [name for name, path in (("old", old_image), ("new", new_image)) if path is None]
    if missing:
        return Registration(
            method="none",
            note=f"the {' and '.join(missing)} survey's orthomosaic is not in place (pass --old-image / --new-image)",
        )
    assert old_image is not None and new_image is not None
    if common is None or common.is_empty:
        return Registration(method="none", note="no common ground to match")
    old, new = _Image(old_image, crs), _Image(new_image, crs)
    fine = max(old.pixel(), new.pixel())
    left, bottom, right, top = common.bounds
    levels = _levels(fine, max(right - left, top - bottom))
    metres = linear_unit_m(crs)
    limit = cfg.max_shift_m / metres

    def refused(note: str, windows: int = 0, agreeing: int = 0) -> Registration:
        return Registration(method="none", windows=windows, agreeing=agreeing, note=note)

    coarse = _Grid(
        Affine(levels[0], 0, left, 0, -levels[0], top),
        (max(1, math.ceil((top - bottom) / levels[0])), max(1, math.ceil((right - left) / levels[0]))),
    )
    reference, reference_valid = _texture(*old.read(coarse))
    moving, moving_valid = _texture(*new.read(coarse))
    if reference_valid.sum() < MIN_WINDOW_PX**2 or moving_valid.sum() < MIN_WINDOW_PX**2:
        return refused("the orthomosaics have too little common ground to match")
    (rows, cols), _, _ = phase_cross_correlation(
        reference, moving, reference_mask=reference_valid, moving_mask=moving_valid, overlap_ratio=0.3
    )
    east, north = cols * levels[0], -rows * levels[0]
    windows = agreeing = 0
    spread = math.nan
    for res in levels[1:]:
        if math.hypot(east, north) > limit:
            break
        size = min(WINDOW_PX, math.floor(min(right - left, top - bottom) / res / 2))
        if size < MIN_WINDOW_PX:
            return refused("the common ground is too small to check a shift on independent windows")
        residuals = []
        for x, y in _window_centres(common, size * res):
            grid = _Grid.centred(x, y, size, res)
            before, before_valid = old.read(grid)
            after, after_valid = new.read(grid.moved(-east, -north))
            if before_valid.mean() < MIN_VALID_SHARE or after_valid.mean() < MIN_VALID_SHARE:
                continue
            hann = _hann(size)
            (dr, dc), _, _ = phase_cross_correlation(
                _texture(before, before_valid)[0] * hann,
                _texture(after, after_valid)[0] * hann,
                upsample_factor=UPSAMPLE,
            )
            residuals.append((dc, -dr))
        windows = len(residuals)
        if not windows:
            return refused(f"no window at {res * metres * 1000:.3g} mm/px is imaged in both orthomosaics")
        found = np.array(residuals)
        near = np.hypot(*(found - np.median(found, axis=0)).T) <= AGREE_PX
        agreeing = int(near.sum())
        if agreeing < max(cfg.min_windows, math.ceil(windows / 2)):
            return refused(
                f"only {agreeing} of {windows} windows at {res * metres * 1000:.3g} mm/px agree on a shift "
                "(the orthomosaics do not match well enough: other ground, or changed beyond recognition)",
                windows,
                agreeing,
            )
        mean = found[near].mean(axis=0)
        east, north = east + mean[0] * res, north + mean[1] * res
        spread = float(np.sqrt(((found[near] - mean) ** 2).sum(axis=1).mean()) * res)
    if math.hypot(east, north) > limit:
        return refused(
            f"the best match lies {math.hypot(east, north) * metres:.3g} m away, beyond "
            f"report.registration.max_shift_m ({cfg.max_shift_m} m)"
        )
    return Registration(
        east_m=float(east * metres),
        north_m=float(north * metres),
        applied=True,
        method="orthomosaics",
        windows=windows,
        agreeing=agreeing,
        spread_m=spread * metres,
    )
