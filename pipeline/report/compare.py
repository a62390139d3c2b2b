"""Survey-to-survey change tracking: match the defects of two surveys of one structure.

Defects are compared in a projected CRS (the old survey's, or its UTM zone when it is geographic),
the new survey reprojected onto it. A new defect matches an old one of the same class when they
come within ``match_distance_m`` (tolerating a small registration offset). Matches are grouped
(a crack that merged or split is one group) and each group is classified:

* new - only in the new survey;        * not found - only in the old survey (repaired, or missed);
* grown / shrunk - crack length (cracks) or area (others) changed by more than ``change_tolerance``
  (relative), or, for cracks, the max width grew by more than that; * unchanged otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rasterio
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.config import ReportConfig
from pipeline.errors import MsafError
from pipeline.fsutil import atomic_output
from pipeline.report import figures
from pipeline.report.build import read_survey_record, report_survey
from pipeline.report.html import Page
from pipeline.report.outputs import write_geopackage

STATUSES = ("new", "grown", "unchanged", "shrunk", "not found")


def load_defects(survey_dir: Path, cfg: ReportConfig) -> gpd.GeoDataFrame:
    """The survey's defects layer (the report is built first if the survey has none yet)."""
    survey_dir = Path(survey_dir)
    gpkg = survey_dir / "defects.gpkg"
    if not gpkg.is_file():
        if not (survey_dir / "mask.tif").is_file():
            raise MsafError(f"{survey_dir}: neither defects.gpkg nor mask.tif; is this a survey folder?")
        report_survey(survey_dir, cfg)
    frame = gpd.read_file(gpkg, layer="defects", engine="pyogrio")
    if frame.crs is None:
        raise MsafError(f"{gpkg}: defects have no CRS")
    return frame


def _working_crs(frame: gpd.GeoDataFrame) -> pyproj.CRS:
    return frame.crs if frame.crs.is_projected else frame.estimate_utm_crs()


def _metres_per_unit(crs: pyproj.CRS) -> float:
    return float(crs.axis_info[0].unit_conversion_factor)


def _status(old: pd.DataFrame, new: pd.DataFrame, is_crack: bool, tolerance: float) -> str:
    if old.empty:
        return "new"
    if new.empty:
        return "not found"
    measure = "length_m" if is_crack else "area_m2"
    before, after = float(old[measure].sum()), float(new[measure].sum())
    widened = is_crack and float(new["max_width_mm"].max()) > float(old["max_width_mm"].max()) * (1 + tolerance)
    if after > before * (1 + tolerance) or widened:
        return "grown"
    if after < before * (1 - tolerance):
        return "shrunk"
    return "unchanged"


def _total(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].sum()) if len(frame) else 0.0


def _widest(frame: pd.DataFrame) -> float:
    return float(frame["max_width_mm"].max()) if len(frame) else 0.0


def _crs_of(path: Path | None) -> rasterio.crs.CRS | None:
    if path is None or not path.is_file():
        return None
    with rasterio.open(path) as ds:
        return ds.crs


def match_defects(old: gpd.GeoDataFrame, new: gpd.GeoDataFrame, cfg: ReportConfig) -> gpd.GeoDataFrame:
    """One row per matched group of defects, with its status and changes, in the working CRS."""
    crs = _working_crs(old if len(old) else new)
    old_w, new_w = old.to_crs(crs), new.to_crs(crs)
    units_per_metre = 1 / _metres_per_unit(crs)
    near = gpd.sjoin(new_w.set_geometry(new_w.buffer(cfg.match_distance_m * units_per_metre)),
                     old_w, how="inner", predicate="intersects", lsuffix="new", rsuffix="old")
    near = near[near["class_new"] == near["class_old"]]
    n_old, n_new = len(old_w), len(new_w)
    graph = coo_matrix((np.ones(len(near)), (near.index.to_numpy() + n_old, near["index_old"].to_numpy())),
                       shape=(n_old + n_new, n_old + n_new))
    _, group_of = connected_components(graph, directed=False)
    rows = []
    for group in np.unique(group_of):
        members = np.nonzero(group_of == group)[0]
        olds, news = old_w.iloc[members[members < n_old]], new_w.iloc[members[members >= n_old] - n_old]
        reference = news if len(news) else olds
        name = reference["class"].iloc[0]
        is_crack = name in cfg.crack_classes
        status = _status(olds, news, is_crack, cfg.change_tolerance)

        row = {"status": status, "class": name,
               "old_ids": ",".join(str(i) for i in olds["defect_id"]),
               "new_ids": ",".join(str(i) for i in news["defect_id"]),
               "old_area_m2": _total(olds, "area_m2"), "new_area_m2": _total(news, "area_m2"),
               "old_length_m": _total(olds, "length_m") if is_crack else np.nan,
               "new_length_m": _total(news, "length_m") if is_crack else np.nan,
               "old_max_width_mm": _widest(olds) if is_crack else np.nan,
               "new_max_width_mm": _widest(news) if is_crack else np.nan,
               "geometry": reference.geometry.union_all()}
        row["delta_area_m2"] = row["new_area_m2"] - row["old_area_m2"]
        row["delta_length_m"] = row["new_length_m"] - row["old_length_m"]
        row["delta_max_width_mm"] = row["new_max_width_mm"] - row["old_max_width_mm"]
        rows.append(row)
    changes = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs) if rows else gpd.GeoDataFrame(
        {"status": [], "class": []}, geometry=gpd.GeoSeries([], crs=crs))
    if len(changes):
        order = changes["status"].map({s: i for i, s in enumerate(STATUSES)})
        changes = changes.assign(_o=order, _y=-changes.geometry.bounds["maxy"], _x=changes.geometry.bounds["minx"])
        changes = changes.sort_values(["_o", "_y", "_x"]).drop(columns=["_o", "_y", "_x"]).reset_index(drop=True)
    changes.insert(0, "change_id", np.arange(1, len(changes) + 1))
    return changes


def compare_surveys(old_dir: str | Path, new_dir: str | Path, out_dir: str | Path, cfg: ReportConfig) -> dict[str, Any]:
    """Write changes.gpkg (changes + summary), changes.geojson, changes.csv and report.html into ``out_dir``."""
    old_dir, new_dir, out_dir = Path(old_dir), Path(new_dir), Path(out_dir)
    old, new = load_defects(old_dir, cfg), load_defects(new_dir, cfg)
    changes = match_defects(old, new, cfg)
    summary = pd.DataFrame([{"status": s, "count": int((changes["status"] == s).sum())} for s in STATUSES])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MsafError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    write_geopackage(out_dir / "changes.gpkg", {"changes": changes, "summary": summary})
    with atomic_output(out_dir / "changes.geojson") as tmp:
        tmp.unlink()
        changes.to_crs("EPSG:4326").to_file(tmp, driver="GeoJSON", engine="pyogrio")
    with atomic_output(out_dir / "changes.csv") as tmp:
        pd.DataFrame(changes.drop(columns="geometry")).to_csv(tmp, index=False)
    record = read_survey_record(new_dir)
    ortho = Path(record["input"]["path"]) if record.get("input", {}).get("path") else None
    bounds = tuple(changes.total_bounds) if len(changes) else tuple(new.to_crs(changes.crs).total_bounds)
    pad = max(bounds[2] - bounds[0], bounds[3] - bounds[1], 1e-6) * 0.05
    bounds = (bounds[0] - pad, bounds[1] - pad, bounds[2] + pad, bounds[3] + pad)
    units = _metres_per_unit(changes.crs)
    same_crs = _crs_of(ortho) == changes.crs
    page = Page(
        title=f"Change report: {old_dir.name} → {new_dir.name}",
        subtitle=", ".join(f"{row['count']} {row['status']}" for _, row in summary.iterrows()),
        overview=figures.overview_map(ortho if same_crs else None, bounds, changes, "status",
                                      figures.STATUS_COLOURS, units, "Changes since the previous survey"),
        has_defects=bool(len(changes)), tables=[("Summary", summary.to_html(index=False, border=0))],
        provenance={"old survey": str(old_dir), "new survey": str(new_dir), "working CRS": changes.crs.to_string(),
                    "match distance": f"{cfg.match_distance_m} m", "change tolerance": f"{cfg.change_tolerance:.0%}"},
    )
    if len(changes):
        columns = [c for c in changes.columns if c != "geometry"]
        page.tables.append(("Changes", pd.DataFrame(changes[columns]).to_html(
            index=False, border=0, float_format="{:,.4g}".format, na_rep="")))
    with atomic_output(out_dir / "report.html") as tmp:
        tmp.write_text(page.render())
    return {"changes": {row["status"]: int(row["count"]) for _, row in summary.iterrows()},
            "outputs": ["changes.gpkg", "changes.geojson", "changes.csv", "report.html"]}

