"""`msaf labels rasterize`: vector labels in any CRS and OGR format onto an orthomosaic's exact grid.

Crack lines are buffered to their width attribute (mm on the ground) or to one pixel; polygons label
area classes; a joint line labels the non-defect class. The area of interest says where the labels
are complete: inside it unlabelled pixels are background, outside they are ignored (255) unless
labelled; the orthomosaic's nodata is always ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np

from pipeline import vectors
from pipeline.class_ids import NO_CLASS
from pipeline.config import ScalingConfig
from pipeline.errors import MsafError
from pipeline.fingerprint import file_fingerprint
from pipeline.labels.burn import Shapes, line_areas
from pipeline.labels.labelset import LABELS_NAME, RECORD_NAME, LabelSetRecord, VectorSource, write_labelset
from pipeline.raster.grid import Box
from pipeline.raster.source import open_source, source_fingerprint
from pipeline.survey_folder import refuse_overwriting

LINES = ("LineString", "MultiLineString")
AREAS = vectors.POLYGONS


@dataclass(frozen=True)
class Grid:
    """The raster grid labels are burnt onto."""

    width: int
    height: int
    crs: Any
    transform: Any
    gsd_m: float

    @property
    def crs_units_per_m(self) -> float:
        """CRS units per ground metre at this raster (a width in mm becomes a buffer in CRS units)."""
        return abs(self.transform.a) / self.gsd_m


def read_vectors(path: Path, layer: str | None, crs: Any, what: str) -> tuple[gpd.GeoDataFrame, VectorSource]:
    """A vector layer in ``crs`` (``pipeline.vectors``), with what identifies it in the label set."""
    frame = vectors.read_vectors(path, layer, crs, what)
    source = VectorSource(
        path=str(Path(path).resolve()),
        fingerprint=file_fingerprint(path),
        layer=layer,
        features=len(frame),
    )
    return frame, source


def label_shapes(
    frame: gpd.GeoDataFrame,
    grid: Grid,
    classes: list[str],
    non_defect_classes: list[str],
    class_field: str,
    width_field: str,
) -> Shapes:
    """The labels as burnable shapes: background areas first, then built lines (joints), then defects,
    areas before lines within each, so a crack drawn across a joint or a spall stays a crack."""
    kinds = frame.geometry.geom_type
    if bad := sorted(set(kinds) - set(LINES) - set(AREAS)):
        raise MsafError(f"labels of geometry type {bad}: draw cracks and joints as lines, area defects as polygons")
    if class_field in frame:
        names = frame[class_field].astype(str).to_numpy()
    elif kinds.isin(LINES).all() and "crack" in classes:
        names = np.full(len(frame), "crack", dtype=object)  # lines without a class field: cracks
    else:
        raise MsafError(
            f"the labels have no `{class_field}` field; name each feature's class "
            f"(one of {classes[1:]}) or pass --class-field"
        )
    if unknown := sorted(set(names) - set(classes)):
        raise MsafError(
            f"label classes {unknown} are not the model's classes {classes}; fix the `{class_field}` values"
        )
    is_line = kinds.isin(LINES).to_numpy()
    widths = np.full(len(frame), abs(grid.transform.a))  # one pixel
    if width_field in frame:
        given = frame[width_field].to_numpy(dtype=float, na_value=np.nan)
        if (given[np.isfinite(given)] <= 0).any():
            raise MsafError(f"label `{width_field}` values must be crack widths in mm above 0")
        widths = np.where(np.isfinite(given), given / 1000 * grid.crs_units_per_m, widths)
    geometries = np.array(frame.geometry.values, dtype=object)
    geometries[is_line] = line_areas(geometries[is_line], widths[is_line])
    ids = np.array([classes.index(n) for n in names])
    rank = np.array([0 if i == 0 else 1 if classes[i] in non_defect_classes else 2 for i in ids])
    order = np.lexsort((is_line, rank))
    return Shapes(list(geometries[order]), [int(v) for v in ids[order]])


def rasterize_labels(
    image: Path,
    labels: Path,
    out_dir: Path,
    classes: list[str],
    non_defect_classes: list[str],
    *,
    layer: str | None = None,
    class_field: str = "class",
    width_field: str = "width_mm",
    aoi: Path | None = None,
    aoi_layer: str | None = None,
) -> LabelSetRecord:
    """Rasterise vector labels onto ``image``'s grid as a label set in ``out_dir``."""
    inputs = [p for p in (image, labels, aoi) if p is not None]
    refuse_overwriting(inputs, out_dir, (LABELS_NAME, RECORD_NAME), "labelling")
    info = open_source(image, ScalingConfig())
    grid = Grid(info.width, info.height, info.crs, info.transform, info.gsd_m)
    frame, source = read_vectors(labels, layer, info.crs, "labels")
    shapes = label_shapes(frame, grid, classes, non_defect_classes, class_field, width_field)
    complete: Shapes | None = None
    aoi_source = None
    if aoi is not None:
        area, aoi_source = read_vectors(aoi, aoi_layer, info.crs, "area of interest")
        if not area.geometry.geom_type.isin(AREAS).all() or not len(area):
            raise MsafError(f"{aoi}: the area of interest must hold polygons")
        complete = Shapes(list(area.geometry.values), [1] * len(area))
    with info.source.open() as ds:

        def label_window(box: Box, transform: Any) -> np.ndarray:
            shape = (box.height, box.width)
            out = np.zeros(shape, dtype=np.uint8)
            if complete is not None:
                out[~complete.cover(shape, transform)] = NO_CLASS
            shapes.burn(out, transform)
            out[ds.dataset_mask(window=box.window) == 0] = NO_CLASS
            return out

        return write_labelset(
            out_dir,
            grid,
            classes,
            label_window,
            origin="vectors",
            image=os.path.abspath(info.path),
            image_fingerprint=source_fingerprint(info),
            gsd_m=info.gsd_m,
            sources=[source],
            area_of_interest=aoi_source,
        )
