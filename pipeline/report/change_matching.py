"""Match the defects of two surveys of one structure, in one projected frame: one row per change.

Cracks are compared piece by piece along their centrelines (the ``crack_centerlines`` segments):
the part of a new crack's centreline that runs within ``match_distance_m`` of an old centreline is
matched, the rest is added. Per new crack:

* new - (almost) none of it matches an old crack, even if it starts at one;
* extended - its added length exceeds ``change_tolerance`` of the matched length (and twice the
  tolerance distance, so resampling never extends a crack), with the added length;
* widened - its matched pieces are wider than the old ones they follow, by the median, beyond the
  flights' own difference and noise (``pipeline.report.width_comparison``);
* unchanged otherwise.

Old cracks none of whose centreline is found again are "not found (repaired?)", one item per
cluster of pieces. Other classes are matched as areas: a new defect matches an old one of the same
class within the tolerance, matches are grouped (merges and splits) and rated new / grown /
unchanged / shrunk / not found by area (a crack from a report without centrelines: new / extended /
widened / unchanged / shrunk / not found by length and width). ``ChangeStatus`` owns the words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry.base import BaseGeometry

from pipeline.config import ReportConfig
from pipeline.raster.ground import linear_unit_m, working_crs
from pipeline.report.change_status import ChangeStatus
from pipeline.report.condition_comparison import outside
from pipeline.report.width_comparison import WIDENING_SIGMAS, WidthComparison, width_pairs
from pipeline.threads import threaded

NOT_FOUND = ChangeStatus.NOT_FOUND.value
NOT_COVERED = ChangeStatus.NOT_COVERED.value
STATUSES = tuple(status.value for status in ChangeStatus)


def working_crs_of(frame: gpd.GeoDataFrame) -> pyproj.CRS:
    """Where two reports' defects are compared: ground metres over the frame (``working_crs``)."""
    return working_crs(frame.crs, tuple(frame.total_bounds)) if len(frame) else frame.crs


def _status(old: pd.DataFrame, new: pd.DataFrame, is_crack: bool, tolerance: float) -> str:
    """A group of matched defects by total size: a crack (from a report without centrelines) by
    length and width, in the same words as the centreline comparison; an area defect by area."""
    if old.empty:
        return ChangeStatus.NEW.value
    if new.empty:
        return ChangeStatus.NOT_FOUND.value
    measure = "length_m" if is_crack else "area_m2"
    before, after = float(old[measure].sum()), float(new[measure].sum())
    if after > before * (1 + tolerance):
        return (ChangeStatus.EXTENDED if is_crack else ChangeStatus.GROWN).value
    if is_crack and float(new["max_width_mm"].max()) > float(old["max_width_mm"].max()) * (1 + tolerance):
        return ChangeStatus.WIDENED.value
    if after < before * (1 - tolerance):
        return ChangeStatus.SHRUNK.value
    return ChangeStatus.UNCHANGED.value


def _total(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].sum()) if len(frame) else 0.0


def _widest(frame: pd.DataFrame) -> float:
    return float(frame["max_width_mm"].max()) if len(frame) else 0.0


def _covered(lines: gpd.GeoDataFrame, other: gpd.GeoDataFrame, distance: float) -> np.ndarray:
    """Per segment of ``lines``: the share of its length within ``distance`` of ``other``'s lines."""
    if not len(lines):
        return np.zeros(0)
    if not len(other):
        return np.zeros(len(lines))
    # buffered as GeoSeries.buffer does (16 segments a quarter circle), on every core
    zones = threaded(shapely.buffer, other.geometry.to_numpy(), distance=distance, quad_segs=16)
    zone = shapely.get_parts(shapely.union_all(zones))  # disjoint polygons
    segments = lines.geometry.to_numpy()
    # each segment against the parts of the zone it meets, not the whole zone (thousands of parts)
    which, part = shapely.STRtree(zone).query(segments, predicate="intersects")
    inside = np.bincount(
        which, weights=shapely.length(threaded(shapely.intersection, segments[which], zone[part])), minlength=len(lines)
    )
    lengths = shapely.length(segments)
    return np.divide(inside, lengths, out=np.ones_like(lengths), where=lengths > 0)


def _found(matched_m: float, length_m: float, floor_m: float) -> bool:
    """A crack is found again when twice the tolerance of it is matched, or, for one shorter than
    that, most of it: a crack of any length surveyed twice is never "new" and "not found" at once."""
    return matched_m >= min(floor_m, 0.5 * length_m)


def _longest_type(cracks: pd.DataFrame) -> str | None:
    """The crack type of the longest of a group of crack pieces (None from a report that predates types)."""
    if "crack_type" not in cracks or not len(cracks):
        return None
    longest = int(np.argmax(cracks["length_m"].fillna(0).to_numpy()))
    kind = cracks["crack_type"].iloc[longest]
    return str(kind) if isinstance(kind, str) else None


def _crack_row(
    status: str, news: pd.DataFrame, olds: pd.DataFrame, delta_length: float, widening: float, geometry
) -> dict:
    return {
        "status": status,
        "class": (news if len(news) else olds)["class"].iloc[0],
        "crack_type": _longest_type(news if len(news) else olds),
        "old_ids": ",".join(str(i) for i in olds["defect_id"]),
        "new_ids": ",".join(str(i) for i in news["defect_id"]),
        "old_area_m2": _total(olds, "area_m2"),
        "new_area_m2": _total(news, "area_m2"),
        "old_length_m": _total(olds, "length_m"),
        "new_length_m": _total(news, "length_m"),
        "old_max_width_mm": _widest(olds),
        "new_max_width_mm": _widest(news),
        "delta_area_m2": _total(news, "area_m2") - _total(olds, "area_m2"),
        "delta_length_m": delta_length,
        "delta_max_width_mm": widening,
        "geometry": geometry,
    }


def _crack_rows(
    old: gpd.GeoDataFrame,
    new: gpd.GeoDataFrame,
    old_lines: gpd.GeoDataFrame,
    new_lines: gpd.GeoDataFrame,
    cfg: ReportConfig,
    crs: pyproj.CRS,
    paired: gpd.GeoDataFrame | None = None,
) -> tuple[list[dict], WidthComparison]:
    """Per new crack: new / extended / widened / unchanged; per cluster of lost old cracks: not found.

    A crack is widened when the median widening of its matched pieces, less the flights' own
    difference (``WidthComparison``), exceeds both ``change_tolerance`` of its width and
    WIDENING_SIGMAS standard errors of that median. That threshold is each crack's
    ``detectable_widening_mm``: a crack rated unchanged may have widened by up to it
    (bench/widening_detection.py measures how much real widening is found).
    """
    distance = cfg.match_distance_m * (1 / linear_unit_m(crs))
    floor_m = 2 * cfg.match_distance_m
    new_lines = new_lines.assign(covered=_covered(new_lines, old_lines, distance))
    old_lines = old_lines.assign(covered=_covered(old_lines, new_lines, distance))
    pairs, widths = width_pairs(new_lines, old_lines, paired, distance)
    rows = []
    # each crack's rows looked up, not searched for: a filter over every row per crack is quadratic
    # in the cracks of a survey (a bridge's orthomosaic holds tens of thousands)
    new_rows, pair_rows = new.groupby("defect_id").indices, pairs.groupby("defect_id_new").indices
    old_row = {int(defect_id): i for i, defect_id in enumerate(old["defect_id"])}
    for defect_id, pieces in new_lines.groupby("defect_id", sort=True):
        crack = new.iloc[new_rows.get(defect_id, [])]
        matched_m = float((pieces["length_m"] * pieces["covered"]).sum())
        added_m = float((pieces["length_m"] * (1 - pieces["covered"])).sum())
        near = pairs.iloc[pair_rows.get(defect_id, [])]
        olds = old.iloc[sorted({old_row[int(i)] for i in near["defect_id_old"] if int(i) in old_row})]
        differences = (near["width_mm_new"] - near["width_mm_old"]).to_numpy(float)
        differences = differences[np.isfinite(differences)]
        change = float(np.median(differences)) if len(differences) else 0.0
        widening = change - widths.bias_mm if len(differences) else 0.0
        uncertainty = widths.uncertainty_mm(len(differences))
        old_width = float(np.median(near["width_mm_old"])) if len(near) else np.nan
        detectable = max(cfg.change_tolerance * old_width, WIDENING_SIGMAS * uncertainty)
        if not _found(matched_m, matched_m + added_m, floor_m):
            status = ChangeStatus.NEW.value
        elif added_m > max(cfg.change_tolerance * matched_m, floor_m):
            status = ChangeStatus.EXTENDED.value
        elif widening > detectable:
            status = ChangeStatus.WIDENED.value
        else:
            status = ChangeStatus.UNCHANGED.value
        row = _crack_row(
            status,
            crack,
            olds,
            added_m if status != ChangeStatus.NEW else matched_m + added_m,
            change,
            crack.geometry.union_all(),
        )
        measured = bool(len(differences)) and np.isfinite(detectable)
        rows.append(
            row
            | {
                "widening_mm": widening,
                "widening_se_mm": uncertainty if len(differences) else np.nan,
                "detectable_widening_mm": detectable if measured else np.nan,
            }
        )
    lost = old[
        old["defect_id"].isin(
            old_lines.groupby("defect_id").filter(
                lambda p: not _found(float((p["length_m"] * p["covered"]).sum()), float(p["length_m"].sum()), floor_m)
            )["defect_id"]
        )
    ]
    return rows + _lost_cracks(lost, distance, crs), widths


def _lost_cracks(lost: gpd.GeoDataFrame, distance: float, crs: pyproj.CRS) -> list[dict]:
    """One "not found" row per cluster of lost old cracks (pieces within ``distance`` of each other)."""
    if not len(lost):
        return []
    touching = gpd.sjoin(
        gpd.GeoDataFrame(lost, crs=crs).set_geometry(lost.buffer(distance)),
        lost,
        predicate="intersects",
        lsuffix="a",
        rsuffix="b",
    )
    position = {index: i for i, index in enumerate(lost.index)}
    graph = coo_matrix(
        (
            np.ones(len(touching)),
            ([position[i] for i in touching.index], [position[i] for i in touching["index_b"]]),
        ),
        shape=(len(lost), len(lost)),
    )
    _, cluster = connected_components(graph, directed=False)
    rows = []
    for group in np.unique(cluster):
        members = lost.iloc[np.nonzero(cluster == group)[0]]
        rows.append(
            _crack_row(
                NOT_FOUND,
                members.iloc[0:0],
                members,
                -float(members["length_m"].sum()),
                np.nan,
                members.geometry.union_all(),
            )
        )
    return rows


def _area_rows(old_w: gpd.GeoDataFrame, new_w: gpd.GeoDataFrame, cfg: ReportConfig, crs: pyproj.CRS) -> list[dict]:
    """Defects matched as areas (every class but cracks with centrelines): groups of overlapping
    defects of one class within the tolerance (merges and splits), one row per group."""
    units_per_metre = 1 / linear_unit_m(crs)
    near = gpd.sjoin(
        new_w.set_geometry(new_w.buffer(cfg.match_distance_m * units_per_metre)),
        old_w,
        how="inner",
        predicate="intersects",
        lsuffix="new",
        rsuffix="old",
    )
    near = near[near["class_new"] == near["class_old"]]
    n_old, n_new = len(old_w), len(new_w)
    graph = coo_matrix(
        (np.ones(len(near)), (near.index.to_numpy() + n_old, near["index_old"].to_numpy())),
        shape=(n_old + n_new, n_old + n_new),
    )
    _, group_of = connected_components(graph, directed=False)
    rows = []
    for group in np.unique(group_of):
        members = np.nonzero(group_of == group)[0]
        olds, news = old_w.iloc[members[members < n_old]], new_w.iloc[members[members >= n_old] - n_old]
        reference = news if len(news) else olds
        name = reference["class"].iloc[0]
        is_crack = name in cfg.crack_classes
        status = _status(olds, news, is_crack, cfg.change_tolerance)

        row = {
            "status": status,
            "class": name,
            "crack_type": _longest_type(reference) if is_crack else None,
            "old_ids": ",".join(str(i) for i in olds["defect_id"]),
            "new_ids": ",".join(str(i) for i in news["defect_id"]),
            "old_area_m2": _total(olds, "area_m2"),
            "new_area_m2": _total(news, "area_m2"),
            "old_length_m": _total(olds, "length_m") if is_crack else np.nan,
            "new_length_m": _total(news, "length_m") if is_crack else np.nan,
            "old_max_width_mm": _widest(olds) if is_crack else np.nan,
            "new_max_width_mm": _widest(news) if is_crack else np.nan,
            "geometry": reference.geometry.union_all(),
        }
        row["delta_area_m2"] = row["new_area_m2"] - row["old_area_m2"]
        row["delta_length_m"] = row["new_length_m"] - row["old_length_m"]
        row["delta_max_width_mm"] = row["new_max_width_mm"] - row["old_max_width_mm"]
        rows.append(row)
    return rows


@dataclass(frozen=True)
class ChangeMatch:
    """The changes between two surveys and how the flights measure the same cracks' widths."""

    changes: gpd.GeoDataFrame
    widths: WidthComparison


def match_defects(
    old: gpd.GeoDataFrame,
    new: gpd.GeoDataFrame,
    cfg: ReportConfig,
    old_lines: gpd.GeoDataFrame | None = None,
    new_lines: gpd.GeoDataFrame | None = None,
    coverage: Callable[[pyproj.CRS], BaseGeometry | None] | None = None,
    paired: gpd.GeoDataFrame | None = None,
) -> ChangeMatch:
    """One row per change, with its status and measures, in the working CRS; and how the flights
    measure the same cracks' widths.

    Cracks are compared along their centreline segments (``old_lines``/``new_lines``, the
    crack_centerlines layers); without them, and for every other class, defects are grouped by area.
    ``coverage`` gives the ground both surveys imaged in a CRS: a new or lost defect mostly outside
    it is ``not covered`` (the other survey never saw that ground). ``paired``: the old cracks'
    pieces read in both orthomosaics (``read_paired_widths``), compared instead of each survey's own
    widths when given.
    """
    crs = working_crs_of(old if len(old) else new)
    old_w, new_w = old.to_crs(crs), new.to_crs(crs)
    crack_rows: list[dict] = []
    widths = WidthComparison()
    if old_lines is not None and new_lines is not None:
        cracks_old = old_w["class"].isin(cfg.crack_classes)
        cracks_new = new_w["class"].isin(cfg.crack_classes)
        crack_rows, widths = _crack_rows(
            old_w[cracks_old],
            new_w[cracks_new],
            old_lines.to_crs(crs),
            new_lines.to_crs(crs),
            cfg,
            crs,
            None if paired is None else paired.to_crs(crs),
        )
        old_w = old_w[~cracks_old].reset_index(drop=True)
        new_w = new_w[~cracks_new].reset_index(drop=True)
    rows = crack_rows + _area_rows(old_w, new_w, cfg, crs)
    changes = (
        gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
        if rows
        else gpd.GeoDataFrame({"status": [], "class": []}, geometry=gpd.GeoSeries([], crs=crs))
    )
    if len(changes) and coverage is not None:
        unseen = changes["status"].isin((ChangeStatus.NEW.value, NOT_FOUND)).to_numpy() & outside(
            changes.geometry, coverage(crs)
        )
        changes.loc[unseen, "status"] = NOT_COVERED
    return ChangeMatch(numbered(changes), widths)


def numbered(changes: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Changes in the order of STATUSES, then north to south and west to east, numbered from 1."""
    changes = changes.drop(columns="change_id", errors="ignore")
    if len(changes):
        order = changes["status"].map({s: i for i, s in enumerate(STATUSES)})
        changes = changes.assign(_o=order, _y=-changes.geometry.bounds["maxy"], _x=changes.geometry.bounds["minx"])
        changes = changes.sort_values(["_o", "_y", "_x"]).drop(columns=["_o", "_y", "_x"]).reset_index(drop=True)
    changes.insert(0, "change_id", np.arange(1, len(changes) + 1))
    return changes
