"""Turn a survey's class mask into measured, severity-rated defect tables (GeoDataFrames)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.warp import transform as warp_transform

from pipeline.config import ReportConfig, SeverityConfig
from pipeline.processes import processes_for
from pipeline.raster.ground import PixelSize
from pipeline.report.component_measure import MeasureJob, measure_components, open_image, open_mask
from pipeline.report.crack_types import Axis, CrackShape, StructureAxes, crack_type
from pipeline.report.linking import PieceEnd, link_pieces
from pipeline.report.measure import (
    CHUNK_PX,
    KeptCrack,
    main_axis,
)
from pipeline.report.pieces import cut_large
from pipeline.report.vectorize import vectorize
from pipeline.report.width import (
    WIDTH_FROM_MASK,
    WIDTH_UNMEASURED,
    CoreModel,
    Darkness,
)
from pipeline.review import REVIEW_FIELD, UNREVIEWED

BELOW_RESOLUTION = "below resolution"
UNMEASURED = "unmeasured"  # the image shows the crack no wider than its noise: no width, no rating
SEVERITIES = (UNMEASURED, BELOW_RESOLUTION, "low", "medium", "high")
MIN_STRIPS_FOR_PROCESSES = 4  # with report.workers auto: an 8192-row mask in strips of 2048
MIN_RESOLVED_PX = 1.0  # narrower than a pixel: the width is an estimate, not a rating


@dataclass
class Defect:
    """One measured defect: a row of the ``defects`` layer (GPKG, GeoJSON, CSV, Parquet). The one
    owner of its columns (``DEFECT_COLUMNS``, in this order); ``class_name`` is the ``class`` column."""

    defect_id: int
    class_name: str
    area_m2: float
    pixels: int
    centroid_x: float
    centroid_y: float
    bbox_minx: float
    bbox_miny: float
    bbox_maxx: float
    bbox_maxy: float
    geometry: Any
    severity: str | None = None
    length_m: float = math.nan
    mean_width_mm: float = math.nan
    max_width_mm: float = math.nan
    width_method: str | None = None
    orientation_deg: float = math.nan
    crack_type: str | None = None  # transverse / longitudinal / diagonal / map / irregular / linear
    angle_to_axis_deg: float = math.nan
    element: str = ""  # the element holding most of it ("" outside every element, or none given)
    crack_id: int = 0  # the crack this piece of mask is part of (its first piece's defect_id); 0: not a crack
    mean_confidence: float = math.nan
    lon: float = math.nan  # filled for all defects at once (one reprojection)
    lat: float = math.nan
    review: str = UNREVIEWED  # the inspector's verdict, set in QGIS: unreviewed / confirmed / false alarm

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "defect_id",
        "class",
        "severity",
        "element",
        "area_m2",
        "length_m",
        "mean_width_mm",
        "max_width_mm",
        "width_method",
        "orientation_deg",
        "crack_id",
        "crack_type",
        "angle_to_axis_deg",
        "mean_confidence",
        "pixels",
        "centroid_x",
        "centroid_y",
        "lon",
        "lat",
        "bbox_minx",
        "bbox_miny",
        "bbox_maxx",
        "bbox_maxy",
        REVIEW_FIELD,
    )

    def row(self) -> dict[str, Any]:
        """The record as the defects layer's columns (and its geometry)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["class"] = values.pop("class_name")
        values[REVIEW_FIELD] = values.pop("review")
        return {name: values[name] for name in (*self.COLUMNS, "geometry")}


DEFECT_COLUMNS = list(Defect.COLUMNS)
CENTERLINE_COLUMNS = ["defect_id", "segment", "length_m", "width_mm", "width_method", "geometry"]


@dataclass(frozen=True)
class DefectTables:
    """Everything a report is built from."""

    defects: gpd.GeoDataFrame
    centerlines: gpd.GeoDataFrame
    summary: pd.DataFrame
    crs: rasterio.crs.CRS
    non_defects: gpd.GeoDataFrame | None = None
    scale_error: float = 0.0  # worst |CRS metres / ground metres - 1| over the defects


def rate(value: float, thresholds: tuple[float, float]) -> str:
    """low below the first threshold, high above the second, medium between."""
    low, high = thresholds
    return "low" if value < low else "high" if value > high else "medium"


def summarise(defects: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """One row per class x severity: counts, total area and crack length."""
    rows = []
    for name in class_names:
        for severity in SEVERITIES:
            subset = defects[(defects["class"] == name) & (defects["severity"] == severity)]
            rows.append(
                {
                    "class": name,
                    "severity": severity,
                    "count": len(subset),
                    "area_m2": float(subset["area_m2"].sum()),
                    "length_m": float(subset["length_m"].fillna(0).sum()),
                }
            )
    return pd.DataFrame(rows, columns=["class", "severity", "count", "area_m2", "length_m"])  # columns even if empty


@dataclass
class _PendingCrack:
    """A crack whose image widths wait for the survey's core level."""

    record: Defect
    measure: KeptCrack
    size: PixelSize
    darkness: Darkness | None
    offset: tuple[int, int]  # (row, col) of its window in the raster
    axis: Axis | None  # what its type is read against (its element's, else the job's)
    piece_of: int = 0  # > 0: cut from a network too large to measure at once, with the other pieces of it

    @property
    def skeleton_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of its centreline pixels in the raster."""
        return self.measure.skeleton_rows + self.offset[0], self.measure.skeleton_cols + self.offset[1]

    def piece_ends(self) -> list[PieceEnd]:
        """Its centreline's ends in the raster's pixels."""
        row0, col0 = self.offset
        return [
            PieceEnd(self.record.defect_id, end.col + col0, end.row + row0, end.d_col, end.d_row)
            for end in self.measure.ends
        ]


def severity_of(
    class_name: str,
    area_m2: float,
    max_width_mm: float | None,
    crack_classes: list[str],
    cfg: SeverityConfig,
    gsd_mm: float | None = None,
) -> str:
    """AASHTO rating; a crack narrower than one pixel is "below resolution" when the GSD cannot
    tell the lowest threshold (0.3 mm needs a GSD of 0.3 mm or finer)."""
    if class_name in crack_classes and max_width_mm is not None:
        if below_resolution(max_width_mm, gsd_mm, cfg.crack_width_mm[0]):
            return BELOW_RESOLUTION
        return rate(max_width_mm, cfg.crack_width_mm)
    return rate(area_m2, cfg.area_m2)


def below_resolution(width_mm: Any, gsd_mm: float | None, lowest_threshold_mm: float) -> Any:
    """A width (or an array of them) narrower than one pixel, where a pixel is wider than the lowest
    width threshold: the pixels cannot tell on which side of that threshold the crack is."""
    resolved_mm = (gsd_mm or 0.0) * MIN_RESOLVED_PX
    return (np.asarray(width_mm) < resolved_mm) & (gsd_mm is not None and resolved_mm > lowest_threshold_mm)


def _link_and_type(pending: list[_PendingCrack], gap_m: float) -> None:
    """Link the pieces of each crack across gaps up to ``gap_m`` (``crack_id``) and type each crack
    as a whole: its pieces' centreline pixels together, against the axis of its largest piece."""
    if not pending:
        return
    gap_px = gap_m / float(np.mean([item.size.mean_m for item in pending]))
    ends = [end for item in pending for end in item.piece_ends()]
    first_piece: dict[int, int] = {}
    for item in pending:
        if item.piece_of:
            first_piece.setdefault(item.piece_of, item.record.defect_id)
    joined = [(first_piece[item.piece_of], item.record.defect_id) for item in pending if item.piece_of]
    crack_of = link_pieces(ends, [item.record.defect_id for item in pending], gap_px, joined=joined)
    groups: dict[int, list[_PendingCrack]] = {}
    for item in pending:
        item.record.crack_id = crack_of[item.record.defect_id]
        groups.setdefault(item.record.crack_id, []).append(item)
    for items in groups.values():
        rows, cols = (np.concatenate(parts) for parts in zip(*(item.skeleton_pixels for item in items), strict=True))
        largest = max(items, key=lambda item: item.record.pixels)
        orientation, spread = main_axis(rows, cols, largest.size)
        cells = sum(item.measure.cells for item in items)
        kind, angle = crack_type(CrackShape(orientation, spread, cells), largest.axis)
        for item in items:
            item.record.crack_type, item.record.angle_to_axis_deg = kind.value, angle


@dataclass(frozen=True)
class _CrackWidths:
    """One crack's widths: its mean, one per centreline chunk, and how they were read."""

    mean_mm: float
    chunks_mm: np.ndarray
    method: str


def _read_widths(item: _PendingCrack, cores: CoreModel, image_given: bool) -> _CrackWidths | None:
    """Widths from the image (the survey's core model, see width.py), else from the mask when no
    image was given; None where the image was given but shows this crack no contrast."""
    px_mm = item.size.mean_m * 1000
    if item.darkness is not None:
        mean_px, chunk_px, method = cores.widths(item.darkness)
        return _CrackWidths(mean_px * px_mm, chunk_px * px_mm, method)
    if image_given:
        return None
    return _CrackWidths(item.measure.mean_width_mm, item.measure.chunk_width_mm, WIDTH_FROM_MASK)


def _readable(measure: KeptCrack) -> np.ndarray:
    """Which of a crack's chunks are long enough to have a width of their own (a shorter one is
    mostly the blurred halo around its ends)."""
    return measure.chunk_length_px >= CHUNK_PX / 4


def _stubs_read_as_their_network(
    pending: list[_PendingCrack], widths: list[_CrackWidths | None]
) -> list[_CrackWidths | None]:
    """``widths`` with each piece of a cut network that has no readable chunk (a corner of the
    network clipped by a grid square: a few pixels of crack and the halo of its tip, read 2x too
    wide on their own) given the length-weighted mean width of its network's readable pieces."""
    readable: dict[int, list[tuple[float, _CrackWidths]]] = {}
    for item, width in zip(pending, widths, strict=True):
        if item.piece_of and width is not None and _readable(item.measure).any():
            readable.setdefault(item.piece_of, []).append((item.measure.chunk_length_px.sum(), width))
    out = list(widths)
    for index, item in enumerate(pending):
        network = readable.get(item.piece_of, [])
        if not item.piece_of or not network or _readable(item.measure).any():
            continue
        lengths = np.array([length for length, _ in network])
        mean = float(np.average([width.mean_mm for _, width in network], weights=lengths))
        method = network[int(lengths.argmax())][1].method
        out[index] = _CrackWidths(mean, np.full(len(item.measure.chunk_length_px), mean), method)
    return out


def _finish_cracks(pending: list[_PendingCrack], cfg: ReportConfig, image_given: bool) -> list[dict[str, Any]]:
    """Widths (``_read_widths``), severity and centreline pieces of every crack. With an image, a
    crack it shows no contrast for is unmeasured: no width and no rating, never a mask width."""
    cores = CoreModel.learn([p.darkness for p in pending if p.darkness is not None])
    widths = _stubs_read_as_their_network(pending, [_read_widths(item, cores, image_given) for item in pending])
    lines = []
    for item, width in zip(pending, widths, strict=True):
        record, measure, size = item.record, item.measure, item.size
        if width is None:
            record.width_method, record.severity = WIDTH_UNMEASURED, UNMEASURED
            lines.extend(_centreline_rows(record, measure, size, np.full(len(measure.chunk_lines), np.nan)))
            continue
        measured = width.chunks_mm[_readable(measure)]
        max_width = max(float(np.percentile(measured, 95)) if measured.size else width.mean_mm, width.mean_mm)
        record.mean_width_mm, record.max_width_mm, record.width_method = width.mean_mm, max_width, width.method
        record.severity = severity_of(
            record.class_name, record.area_m2, max_width, cfg.crack_classes, cfg.severity, size.mean_m * 1000
        )
        lines.extend(_centreline_rows(record, measure, size, width.chunks_mm))
    return lines


def _centreline_rows(
    record: Defect, measure: KeptCrack, size: PixelSize, chunk_widths: np.ndarray
) -> list[dict[str, Any]]:
    """One row per centreline chunk with its own width (NaN where unmeasured)."""
    return [
        {
            "defect_id": record.defect_id,
            "segment": segment + 1,
            "length_m": float(length_px * size.mean_m),
            "width_mm": float(width),
            "width_method": record.width_method,
            "geometry": line,
        }
        for segment, (line, width, length_px) in enumerate(
            zip(measure.chunk_lines, chunk_widths, measure.chunk_length_px, strict=True)
        )
        if not line.is_empty
    ]


def build_defects(
    mask_path: Path,
    confidence_path: Path | None,
    class_names: list[str],
    cfg: ReportConfig,
    image_path: Path | None = None,
    structure: StructureAxes | None = None,
) -> DefectTables:
    """Vectorise the mask's defect classes, measure each defect in ground units, rate its severity.

    Non-defect classes (joints) become a separate layer of outlines; they are never measured as
    cracks, counted or rated, and classes that are neither (background) are skipped. Each defect
    is measured with the ground size of a pixel at its own location (geodesic: true metres in any
    CRS); crack widths come from ``image_path`` (the orthomosaic) when given, else from the mask.
    ``structure``: the elements each defect is placed in and the axes its crack type is read against.
    """
    where = structure or StructureAxes.of(None)
    records: list[Defect] = []
    pending: list[_PendingCrack] = []
    others: list[dict[str, Any]] = []
    defect_names, non_defect_names = cfg.split_classes(class_names)
    wanted = [class_names.index(n) for n in defect_names + non_defect_names]
    with open_mask(mask_path) as mask:
        if (image := open_image(image_path, mask)) is not None:
            image.close()  # checked here: a foreign image is one line before any work
        # strips labelled and polygonised in worker processes: from MIN_STRIPS_FOR_PROCESSES with auto
        workers = processes_for(cfg.workers, math.ceil(mask.height / cfg.strip_rows), MIN_STRIPS_FOR_PROCESSES)
        components = vectorize(mask, sorted(wanted), cfg.strip_rows, num_classes=len(class_names), workers=workers)
        crack_ids = {class_names.index(n) for n in cfg.crack_classes if n in defect_names}
        components = cut_large(components, mask.transform, cfg.max_piece_px, crack_ids)
        crs = mask.crs
    job = MeasureJob(mask_path, confidence_path, image_path, tuple(class_names), cfg)
    worst_scale_error = 0.0
    for component, measured in zip(components, measure_components(job, components), strict=True):
        if measured is None:
            continue
        worst_scale_error = max(worst_scale_error, measured.scale_error)
        if not measured.is_defect:
            others.append(
                {
                    "class": measured.class_name,
                    "area_m2": measured.area_m2,
                    "pixels": component.pixels,
                    "geometry": measured.geometry,
                }
            )
            continue
        minx, miny, maxx, maxy = component.geometry.bounds
        record = Defect(
            defect_id=len(records) + 1,
            class_name=measured.class_name,
            area_m2=measured.area_m2,
            pixels=component.pixels,
            centroid_x=measured.centroid[0],
            centroid_y=measured.centroid[1],
            bbox_minx=minx,
            bbox_miny=miny,
            bbox_maxx=maxx,
            bbox_maxy=maxy,
            geometry=measured.geometry,
            mean_confidence=measured.mean_confidence,
        )
        records.append(record)
        record.element, axis = where.locate(component.geometry)
        crack = measured.crack
        if crack is None:
            record.severity = severity_of(record.class_name, record.area_m2, None, cfg.crack_classes, cfg.severity)
            continue
        record.length_m, record.orientation_deg = crack.length_m, crack.orientation_deg
        pending.append(
            _PendingCrack(record, crack, measured.size, measured.darkness, measured.offset, axis, component.piece_of)
        )
    _link_and_type(pending, cfg.link_gap_m)
    lines = _finish_cracks(pending, cfg, image_path is not None)
    defects = gpd.GeoDataFrame(
        [r.row() for r in records], columns=[*DEFECT_COLUMNS, "geometry"], geometry="geometry", crs=crs
    )
    if len(defects):
        lon, lat = warp_transform(crs, "EPSG:4326", defects["centroid_x"].tolist(), defects["centroid_y"].tolist())
        defects["lon"], defects["lat"] = lon, lat
    defects = defects.astype({"defect_id": "int64", "pixels": "int64", "crack_id": "int64"})
    centerlines = gpd.GeoDataFrame(lines, columns=CENTERLINE_COLUMNS, geometry="geometry", crs=crs)
    non_defects = gpd.GeoDataFrame(
        others, columns=["class", "area_m2", "pixels", "geometry"], geometry="geometry", crs=crs
    ).astype({"pixels": "int64"})
    return DefectTables(defects, centerlines, summarise(defects, defect_names), crs, non_defects, worst_scale_error)
