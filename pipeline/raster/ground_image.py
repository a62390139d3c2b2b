"""An orthomosaic's luminance on a grid of another CRS: how two epochs' images are compared.

Two flights' orthomosaics come in their own CRSs and pixel grids; registration and the change
report's visibility check read both onto one grid of the working CRS. Memory is flat in raster
size: each read is the source window under the grid, decimated to about the grid's pixel, then
warped onto it. A file that declares no footprint has its painted-in collar (``pipeline.raster.collar``,
on the decimated pixels) taken out of the valid ground, as the survey takes it out of the mask.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.warp import calculate_default_transform, reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from pipeline.config import CollarConfig
from pipeline.raster.collar import CollarRule
from pipeline.raster.luminance import grey_levels
from pipeline.raster.source import declared_footprint, on_survey_scale, rgb_bands
from pipeline.raster.trust import driver_for

PAINTED = CollarRule.of(CollarConfig())  # the fill of a file without a footprint (on the read's own pixels)


@dataclass(frozen=True)
class GroundGrid:
    """A north-up grid of a projected CRS: where an orthomosaic is read to be compared with another."""

    transform: Affine
    shape: tuple[int, int]  # rows, cols

    @classmethod
    def centred(cls, x: float, y: float, size: int, res: float) -> GroundGrid:
        """A ``size``² grid of ``res`` pixels centred on (x, y)."""
        return cls(Affine(res, 0, x - size * res / 2, 0, -res, y + size * res / 2), (size, size))

    @classmethod
    def covering(cls, bounds: tuple[float, float, float, float], res: float) -> GroundGrid:
        """The grid of ``res`` pixels from the top-left of ``bounds`` (left, bottom, right, top) over all of them."""
        left, bottom, right, top = bounds
        shape = (max(1, math.ceil((top - bottom) / res)), max(1, math.ceil((right - left) / res)))
        return cls(Affine(res, 0, left, 0, -res, top), shape)

    def moved(self, east: float, north: float) -> GroundGrid:
        """The grid whose pixel (r, c) lies (east, north) from this one's."""
        return GroundGrid(Affine.translation(east, north) @ self.transform, self.shape)


@dataclass(frozen=True)
class GroundImage:
    """An orthomosaic read as luminance onto grids of a projected CRS (``crs``), whatever its own CRS."""

    path: Path
    crs: pyproj.CRS

    def pixel(self) -> float:
        """The image's pixel, in working CRS units."""
        with rasterio.open(self.path, driver=driver_for(str(self.path), "vrt")) as src:
            transform, _, _ = calculate_default_transform(src.crs, self.crs, src.width, src.height, *src.bounds)
        return max(abs(transform.a), abs(transform.e))

    @contextmanager
    def reading(self) -> Iterator[GroundReader]:
        """The image held open for many reads (a crack at a time: opening the file costs more than
        reading a crack's window)."""
        with rasterio.open(self.path, driver=driver_for(str(self.path), "vrt")) as src:
            yield GroundReader(src, self.crs)

    def read(self, grid: GroundGrid) -> tuple[np.ndarray, np.ndarray]:
        """One read (``GroundReader.read``)."""
        with self.reading() as reader:
            return reader.read(grid)


@dataclass(frozen=True)
class GroundReader:
    """An open orthomosaic (``GroundImage.reading``) read onto grids of ``crs``."""

    src: rasterio.DatasetReader
    crs: pyproj.CRS

    def read(self, grid: GroundGrid) -> tuple[np.ndarray, np.ndarray]:
        """Luminance (float32) and validity on ``grid``: the source window read decimated to about
        the grid's pixel, then warped onto it (bilinear)."""
        empty = np.zeros(grid.shape, np.float32), np.zeros(grid.shape, bool)
        src = self.src
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
        bands = on_survey_scale(src, bands)
        if len(band_numbers) == 3 and declared_footprint(src) == "none":
            # a painted-in footprint: its edge must not pull a registration, nor its black pass for ground
            valid &= ~PAINTED.collar(PAINTED.fill_colour(bands))
        read_transform = src.window_transform(window) @ Affine.scale(window.width / shape[1], window.height / shape[0])
        luminance, on_grid = empty[0].copy(), np.zeros(grid.shape, np.uint8)
        common = {
            "src_transform": read_transform,
            "src_crs": src.crs,
            "dst_transform": grid.transform,
            "dst_crs": self.crs,
        }
        reproject(grey_levels(bands).astype(np.float32), luminance, resampling=Resampling.bilinear, **common)
        reproject(valid.astype(np.uint8), on_grid, resampling=Resampling.nearest, dst_nodata=0, **common)
        return luminance, on_grid.astype(bool)
