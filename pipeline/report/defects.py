"""Turn a survey's class mask into measured, severity-rated defect tables (GeoDataFrames)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.warp import transform as warp_transform

from pipeline.config import ReportConfig, SeverityConfig
from pipeline.errors import MsafError
from pipeline.raster.source import pixel_size
from pipeline.report.measure import defect_window, measure_crack, rasterize_defect
from pipeline.report.vectorize import vectorize

SEVERITIES = ("low", "medium", "high")
DEFECT_COLUMNS = [
    "defect_id", "class", "severity", "area_m2", "length_m", "mean_width_mm", "max_width_mm", "orientation_deg",
    "mean_confidence", "pixels", "centroid_x", "centroid_y", "lon", "lat", "bbox_minx", "bbox_miny",
    "bbox_maxx", "bbox_maxy",
]


@dataclass(frozen=True)
class DefectTables:
    """Everything a report is built from."""

    defects: gpd.GeoDataFrame
    centerlines: gpd.GeoDataFrame
    summary: pd.DataFrame
    crs: rasterio.crs.CRS
    non_defects: gpd.GeoDataFrame | None = None


def rate(value: float, thresholds: tuple[float, float]) -> str:
    """low below the first threshold, high above the second, medium between."""
    low, high = thresholds
    return "low" if value < low else "high" if value > high else "medium"


def severity_of(class_name: str, area_m2: float, max_width_mm: float | None, crack_classes: list[str],
                cfg: SeverityConfig) -> str:
    if class_name in crack_classes and max_width_mm is not None:
        return rate(max_width_mm, cfg.crack_width_mm)
    return rate(area_m2, cfg.area_m2)


def summarise(defects: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """One row per class x severity: counts, total area and crack length."""
    rows = []
    for name in class_names:
        for severity in SEVERITIES:
            subset = defects[(defects["class"] == name) & (defects["severity"] == severity)]
            rows.append({"class": name, "severity": severity, "count": len(subset),
                         "area_m2": float(subset["area_m2"].sum()),
                         "length_m": float(subset["length_m"].fillna(0).sum())})
    return pd.DataFrame(rows)


def open_mask(path: Path) -> rasterio.DatasetReader:
    """Open a survey mask with the checks a report needs (exists, georeferenced)."""
    if not path.is_file():
        raise MsafError(f"no mask at {path}; run `msaf survey` first or point at a survey folder")
    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError:
        raise MsafError(f"{path}: not a readable raster") from None
    if ds.crs is None:
        ds.close()
        raise MsafError(f"{path}: mask has no CRS; defects cannot be placed on a map (re-run the survey "
                        "with --assume-crs or georeference the mask)")
    return ds


def build_defects(mask_path: Path, confidence_path: Path | None, class_names: list[str],
                  cfg: ReportConfig) -> DefectTables:
    """Vectorise the mask's defect classes, measure each defect, rate its severity.

    Non-defect classes (joints) become a separate layer of outlines; they are never measured as
    cracks, counted or rated, and classes that are neither (background) are skipped.
    """
    records, lines, others = [], [], []
    defect_names, non_defect_names = cfg.split_classes(class_names)
    wanted = [class_names.index(n) for n in defect_names + non_defect_names]
    with open_mask(mask_path) as mask:
        size = pixel_size(mask.crs, mask.transform, mask.height)
        confidence = rasterio.open(confidence_path) if confidence_path and confidence_path.is_file() else None
        try:
            components = vectorize(mask, sorted(wanted), cfg.strip_rows)
            for component in components:
                area = component.pixels * size.area_m2
                if area < cfg.min_area_m2:
                    continue
                name = class_names[component.class_id]
                if name not in defect_names:
                    others.append({"class": name, "area_m2": area, "pixels": component.pixels,
                                   "geometry": component.geometry.simplify(
                                       cfg.simplify_m / max(size.mean_m, 1e-12) * abs(mask.transform.a),
                                       preserve_topology=True)})
                    continue
                window = defect_window(component.geometry, mask.transform, mask.width, mask.height)
                pixels = rasterize_defect(component.geometry, window, mask.transform)
                mean_conf = float("nan")
                if confidence is not None:
                    mean_conf = float(confidence.read(1, window=window)[pixels].mean() / 255)
                crack = None
                if name in cfg.crack_classes:
                    crack = measure_crack(pixels, rasterio.windows.transform(window, mask.transform), size)
                defect_id = len(records) + 1
                centroid = component.geometry.centroid
                minx, miny, maxx, maxy = component.geometry.bounds
                records.append({
                    "defect_id": defect_id, "class": name,
                    "severity": severity_of(name, area, crack.max_width_mm if crack else None,
                                            cfg.crack_classes, cfg.severity),
                    "area_m2": area, "length_m": crack.length_m if crack else np.nan,
                    "mean_width_mm": crack.mean_width_mm if crack else np.nan,
                    "max_width_mm": crack.max_width_mm if crack else np.nan,
                    "orientation_deg": crack.orientation_deg if crack else np.nan,
                    "mean_confidence": mean_conf, "pixels": component.pixels,
                    "centroid_x": centroid.x, "centroid_y": centroid.y,
                    "bbox_minx": minx, "bbox_miny": miny, "bbox_maxx": maxx, "bbox_maxy": maxy,
                    "geometry": component.geometry.simplify(cfg.simplify_m / max(size.mean_m, 1e-12)
                                                            * abs(mask.transform.a), preserve_topology=True),
                })
                if crack is not None:
                    lines.append({"defect_id": defect_id, "length_m": crack.length_m,
                                  "geometry": crack.centerline})
        finally:
            if confidence is not None:
                confidence.close()
        crs = mask.crs
    defects = gpd.GeoDataFrame(records, columns=[*DEFECT_COLUMNS, "geometry"], geometry="geometry", crs=crs)
    if len(defects):
        lon, lat = warp_transform(crs, "EPSG:4326", defects["centroid_x"].tolist(), defects["centroid_y"].tolist())
        defects["lon"], defects["lat"] = lon, lat
    defects = defects.astype({"defect_id": "int64", "pixels": "int64"})
    centerlines = gpd.GeoDataFrame(lines, columns=["defect_id", "length_m", "geometry"], geometry="geometry", crs=crs)
    non_defects = gpd.GeoDataFrame(others, columns=["class", "area_m2", "pixels", "geometry"], geometry="geometry",
                                   crs=crs).astype({"pixels": "int64"})
    return DefectTables(defects, centerlines, summarise(defects, defect_names), crs, non_defects)
