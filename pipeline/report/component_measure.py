"""Measure each vectorised defect on its own window of the survey's rasters, on every core.

A report's time at bridge scale is mostly this: a crack is rasterised back into its window,
skeletonised, pruned, cut into chunks and integrated across in the orthomosaic, one crack at a
time (``pipeline.report.measure``, ``pipeline.report.width``). Each defect's measurement reads only
its own window, so defects are measured in worker processes (``report.workers``) and come back in
their order: the tables are the same, byte for byte, with one process or several.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.env
import rasterio.windows
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from pipeline.config import ReportConfig
from pipeline.errors import MsafError
from pipeline.processes import batches, in_processes, processes_for
from pipeline.raster.ground import PixelSize, ground_pixel_size, scale_error
from pipeline.raster.luminance import grey_levels
from pipeline.raster.source import rgb_bands
from pipeline.raster.trust import driver_for
from pipeline.report.measure import KeptCrack, defect_window, measure_crack, rasterize_defect
from pipeline.report.vectorize import Component
from pipeline.report.width import REACH_PX, Darkness, measure_darkness

MIN_FOR_PROCESSES = 200  # defects: with ``workers: auto`` fewer are measured here (a worker starts in ~1 s)
BATCH = 32  # defects a worker measures per call (it opens the rasters once per call: ~1 ms)


def open_mask(path: Path) -> rasterio.DatasetReader:
    """Open a survey mask with the checks a report needs (exists, georeferenced)."""
    if not path.is_file():
        raise MsafError(f"no mask at {path}; run `msaf survey` first or point at a survey folder")
    try:
        ds = rasterio.open(path, driver="GTiff")  # masks are GeoTIFFs; nothing GDAL reads by content
    except rasterio.errors.RasterioIOError:
        raise MsafError(f"{path}: not a readable GeoTIFF mask") from None
    if ds.crs is None:
        ds.close()
        raise MsafError(
            f"{path}: mask has no CRS; defects cannot be placed on a map (re-run the survey "
            "with --assume-crs or georeference the mask)"
        )
    return ds


def open_image(image_path: Path | None, mask: rasterio.DatasetReader) -> rasterio.DatasetReader | None:
    """The orthomosaic the widths are read from; it must share the mask's grid."""
    if image_path is None:
        return None
    try:
        image = rasterio.open(image_path, driver=driver_for(str(image_path), "vrt"))  # checked by survey_image's policy
    except rasterio.errors.RasterioIOError:
        raise MsafError(f"{image_path}: not a readable raster (--image must be the surveyed orthomosaic)") from None
    if (image.width, image.height) != (mask.width, mask.height) or not image.transform.almost_equals(mask.transform):
        image.close()
        raise MsafError(
            f"{image_path}: {image.width}x{image.height} px on another grid than the mask "
            f"({mask.width}x{mask.height}); pass the orthomosaic that was surveyed"
        )
    if image.crs is not None and image.crs != mask.crs:
        image.close()
        raise MsafError(
            f"{image_path}: CRS {image.crs.to_string()} differs from the mask's "
            f"{mask.crs.to_string()}; pass the orthomosaic that was surveyed (same grid and CRS)"
        )
    return image


def grey_window(image: rasterio.DatasetReader, window: rasterio.windows.Window) -> np.ndarray:
    """Grey levels of a window, NaN where the image has no data."""
    bands = rgb_bands(image) if image.count >= 3 else tuple(range(1, image.count + 1))
    grey = grey_levels(image.read(bands, window=window))
    grey[image.dataset_mask(window=window) == 0] = np.nan
    return grey


@dataclass(frozen=True)
class MeasureJob:
    """What any process needs to measure a survey's defects (paths and settings: it travels to workers)."""

    mask: Path
    confidence: Path | None
    image: Path | None  # the orthomosaic, checked against the mask's grid; None: widths from the mask
    class_names: tuple[str, ...]
    cfg: ReportConfig

    @property
    def defect_names(self) -> list[str]:
        """The classes measured as defects (the others are outlined only)."""
        return self.cfg.split_classes(list(self.class_names))[0]


@dataclass(frozen=True)
class MeasuredComponent:
    """One component as measured on its window; the report turns it into a defect or an outline."""

    class_name: str
    is_defect: bool
    area_m2: float
    size: PixelSize  # ground size of a pixel at its centroid
    scale_error: float  # |CRS metres / ground metres - 1| there
    geometry: BaseGeometry  # simplified by ``simplify_m``
    centroid: tuple[float, float]
    mean_confidence: float
    crack: KeptCrack | None  # a crack class's centreline and mask widths
    darkness: Darkness | None  # a crack's darkness in the image (None: no image, or no contrast)
    offset: tuple[int, int]  # (row, col) of its window in the raster


class ComponentMeasurer:
    """Measures components on a survey's rasters, opened once (in this process or in a worker)."""

    def __init__(self, job: MeasureJob) -> None:
        self.job = job
        self.defect_names = job.defect_names
        self.mask = open_mask(job.mask)
        self.confidence: rasterio.DatasetReader | None = None
        self.image: rasterio.DatasetReader | None = None
        try:
            if job.confidence and job.confidence.is_file():
                self.confidence = rasterio.open(job.confidence)
            self.image = open_image(job.image, self.mask)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the rasters it opened."""
        for dataset in (self.confidence, self.image, self.mask):
            if dataset is not None:
                dataset.close()

    def __enter__(self) -> ComponentMeasurer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def measure(self, component: Component) -> MeasuredComponent | None:
        """Its area, simplified outline, confidence and, for a crack, centreline and darkness; None
        when it is smaller than ``min_area_m2`` (a piece of a cut network never is: ``pieces.py``)."""
        mask, cfg = self.mask, self.job.cfg
        centroid = component.geometry.centroid
        col, row = ~mask.transform @ (centroid.x, centroid.y)
        size = ground_pixel_size(mask.crs, mask.transform, col, row)
        area = component.pixels * size.area_m2
        if area < cfg.min_area_m2 and not component.piece_of:  # a piece of a large network is never dropped
            return None
        name = self.job.class_names[component.class_id]
        geometry = component.geometry.simplify(
            cfg.simplify_m / max(size.mean_m, 1e-12) * abs(mask.transform.a), preserve_topology=True
        )
        measured = MeasuredComponent(
            class_name=name,
            is_defect=name in self.defect_names,
            area_m2=area,
            size=size,
            scale_error=abs(scale_error(mask.crs, mask.transform, size)),
            geometry=geometry,
            centroid=(centroid.x, centroid.y),
            mean_confidence=math.nan,
            crack=None,
            darkness=None,
            offset=(0, 0),
        )
        if not measured.is_defect:
            return measured
        window = defect_window(component.geometry, mask.transform, mask.width, mask.height, pad=REACH_PX + 2)
        pixels = rasterize_defect(component.geometry, window, mask.transform)
        mean_confidence = math.nan
        if self.confidence is not None:
            mean_confidence = float(self.confidence.read(1, window=window)[pixels].mean() / 255)
        offset = (int(window.row_off), int(window.col_off))
        if name not in cfg.crack_classes:
            return replace(measured, mean_confidence=mean_confidence, offset=offset)
        crack = measure_crack(pixels, rasterio.windows.transform(window, mask.transform), size)
        darkness = None
        if self.image is not None:
            labels = mask.read(1, window=window)
            darkness = measure_darkness(
                grey_window(self.image, window),
                pixels,
                ((labels != 0) & ~pixels) | _outside(component.square, window),
                crack.skeleton,
                crack.chunk_of,
                crack.chunk_length_px,
                crack.length_px,
            )
        return replace(measured, mean_confidence=mean_confidence, offset=offset, crack=crack.kept(), darkness=darkness)


def _outside(square: tuple[int, int, int, int] | None, window: Window) -> np.ndarray | bool:
    """The window's pixels beyond a piece's grid square: the ground of its neighbouring pieces. The
    blurred crack runs on across a cut, so a piece's band and ring would otherwise take in the
    next piece's halo too (measured: chunks at the cuts 4 % wider than elsewhere)."""
    if square is None:
        return False
    col0, row0, col1, row1 = square
    rows = np.arange(int(window.row_off), int(window.row_off + window.height))
    cols = np.arange(int(window.col_off), int(window.col_off + window.width))
    inside = ((rows >= row0) & (rows < row1))[:, None] & ((cols >= col0) & (cols < col1))[None, :]
    return ~inside


def measure_components(job: MeasureJob, components: Sequence[Component]) -> Iterator[MeasuredComponent | None]:
    """Each component measured (None: below the minimum area), in the order given: in worker processes
    (``report.workers``; with auto only for ``MIN_FOR_PROCESSES`` components or more), else here."""
    workers = processes_for(job.cfg.workers, len(components), MIN_FOR_PROCESSES)
    if workers < 2:
        with ComponentMeasurer(job) as measurer:
            for component in components:
                yield measurer.measure(component)
        return
    gdal_options = rasterio.env.getenv() if rasterio.env.hasenv() else {}
    calls = ((job, batch, gdal_options) for batch in batches(components, BATCH))
    for measured in in_processes(_measure_batch, calls, workers):
        yield from measured


def _measure_batch(
    job: MeasureJob, batch: list[Component], gdal_options: dict[str, Any]
) -> list[MeasuredComponent | None]:
    """A batch measured in a worker, under the GDAL settings its parent reads with (a comparison reads
    with GDAL_PAM_ENABLED=NO: no side files beside the surveys)."""
    with rasterio.Env(**gdal_options), ComponentMeasurer(job) as measurer:
        return [measurer.measure(component) for component in batch]
