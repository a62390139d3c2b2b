"""Survey-to-survey change tracking: match the defects of two surveys of one structure.

Defects are compared in a projected CRS (the old survey's, or its UTM zone when it is geographic),
the new survey reprojected onto it, within ``match_distance_m`` (the registration tolerance).

Cracks are compared piece by piece along their centrelines (the ``crack_centerlines`` segments):
the part of a new crack's centreline that runs within the tolerance of an old centreline is
matched, the rest is added. Per new crack:

* new - (almost) none of it matches an old crack, even if it starts at one;
* extended - its added length exceeds ``change_tolerance`` of the matched length (and twice the
  tolerance distance, so resampling never extends a crack), with the added length;
* widened - its matched segments are wider than the old ones they follow, by the median;
* unchanged otherwise.

Old cracks none of whose centreline is found again are "not found (repaired?)", one item per
cluster of pieces. Where both orthomosaics are at hand, new and not-found cracks are looked for in
them (``pipeline.report.visibility``): a not-found crack whose line the new image still shows is
"not detected (still visible)", a new one the old image already showed "missed before (visible
then)". A new defect where the old orthomosaic could not show one (too dark, overexposed or too
blurred there: the old report's condition cells), or a lost one where the new could not, is "not
seen (too dark or blurred)": neither new nor repaired. Other classes are matched as areas: a new
defect matches an old one of the same class within the tolerance, matches are grouped (merges and
splits) and rated new / grown / unchanged / shrunk / not found by area (a crack from a report
without centrelines: new / extended / widened / unchanged / shrunk / not found by length and
width). ``ChangeStatus`` owns the words.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import rasterio
import rasterio.features
import rasterio.warp
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry.base import BaseGeometry

from pipeline import styles
from pipeline.config import ReportConfig
from pipeline.errors import MsafError
from pipeline.fsutil import atomic_output
from pipeline.inference.scales import scales_key
from pipeline.raster.ground import ground_sample_distance, linear_unit_m, working_crs
from pipeline.raster.ground_image import GroundImage
from pipeline.report import figures
from pipeline.report.build import report_survey, survey_image
from pipeline.report.cad import write_change_dxf
from pipeline.report.change_status import ChangeStatus
from pipeline.report.condition import cannot_show_cracks, condition_change, quantities
from pipeline.report.crack_changes import changes_per_crack, ids_of
from pipeline.report.elements import read_elements
from pipeline.report.epochs import FlightInterval, flight_interval
from pipeline.report.footprint import survey_footprint
from pipeline.report.html import Page
from pipeline.report.outputs import write_geojson, write_geopackage
from pipeline.report.paired_widths import read_paired_widths
from pipeline.report.registration import Registration, register_epochs
from pipeline.report.visibility import line_contrast, still_visible
from pipeline.report.width import WIDTH_FROM_MASK
from pipeline.survey_folder import SURVEY_OUTPUTS, SurveyFolder, prepare_output_folder
from pipeline.survey_record import SurveyRecord, read_survey_record

NOT_FOUND = ChangeStatus.NOT_FOUND.value
NOT_COVERED = ChangeStatus.NOT_COVERED.value
CHANGES_GPKG, CHANGES_GEOJSON, CHANGES_CSV = "changes.gpkg", "changes.geojson", "changes.csv"
CHANGES_DXF = "changes.dxf"
CHANGE_OUTPUTS = (CHANGES_GPKG, CHANGES_GEOJSON, CHANGES_CSV, CHANGES_DXF, SurveyFolder.HTML)
STATUSES = tuple(status.value for status in ChangeStatus)


def load_defects(survey_dir: Path, cfg: ReportConfig, layer: str = "defects") -> gpd.GeoDataFrame:
    """A layer of the survey's defects.gpkg (the report is built first if the survey has none yet)."""
    survey_dir = Path(survey_dir)
    gpkg = SurveyFolder(survey_dir).gpkg
    if not gpkg.is_file():
        if not SurveyFolder(survey_dir).mask.is_file():
            raise MsafError(f"{survey_dir}: neither defects.gpkg nor mask.tif; is this a survey folder?")
        report_survey(survey_dir, cfg)
    try:
        frame = gpd.read_file(gpkg, layer=layer, engine="pyogrio")
    except pyogrio.errors.DataLayerError:
        raise MsafError(
            f"{gpkg} has no layer {layer!r} (deleted in a GIS, or written by an older release); "
            "re-run `msaf report` on that survey"
        ) from None
    except pyogrio.errors.DataSourceError:
        raise MsafError(f"{gpkg} is not a GeoPackage; re-run `msaf report` on that survey") from None
    if frame.crs is None:
        raise MsafError(f"{gpkg}: {layer} have no CRS")
    return frame


def _outside(geometries: gpd.GeoSeries, coverage: BaseGeometry | None) -> np.ndarray:
    """Bool per geometry: under half of it lies on ground both surveys imaged."""
    if coverage is None:
        return np.zeros(len(geometries), bool)
    area = geometries.area.to_numpy()
    inside = geometries.intersection(coverage).area.to_numpy()
    return inside < 0.5 * np.maximum(area, 1e-300)


def _condition_cells(survey_dir: Path, cfg: ReportConfig) -> gpd.GeoDataFrame | None:
    """The survey's condition map, or None when its report predates condition states."""
    if "condition_cells" not in pyogrio.list_layers(SurveyFolder(survey_dir).gpkg)[:, 0]:
        return None
    return load_defects(survey_dir, cfg, "condition_cells")


def _unrated_ground(survey_dir: Path, cfg: ReportConfig, crs: pyproj.CRS) -> BaseGeometry | None:
    """The ground a survey's orthomosaic could not show a crack on (its condition cells too dark,
    overexposed or too blurred), in ``crs``; None where there is none or the report did not read the image."""
    cells = _condition_cells(survey_dir, cfg)
    if cells is None:
        return None
    unrated = cannot_show_cracks(cells)
    return cells[unrated].to_crs(crs).union_all() if unrated.any() else None


def _not_seen(
    changes: gpd.GeoDataFrame, old_unrated: BaseGeometry | None, new_unrated: BaseGeometry | None
) -> gpd.GeoDataFrame:
    """A defect not found that lies mostly where the new orthomosaic could not show it, or a new one
    where the old could not, is "not seen": the image, not the structure, may be what changed.
    Both grounds are in the changes' frame."""
    for status, unrated in ((NOT_FOUND, new_unrated), (ChangeStatus.NEW.value, old_unrated)):
        rows = changes.index[changes["status"] == status]
        if unrated is None or not len(rows):
            continue
        hidden = ~_outside(changes.geometry.loc[rows], unrated)
        changes.loc[rows[hidden], "status"] = ChangeStatus.NOT_SEEN.value
    return changes


@dataclass(frozen=True)
class ConditionComparison:
    """Both epochs' area per condition state on the ground both imaged, and per element when the
    params name the structure's elements (``report.elements``)."""

    whole: pd.DataFrame
    by_element: pd.DataFrame | None = None

    @property
    def change_m2(self) -> dict[str, float]:
        """Square metres gained (lost: negative) per condition state on the common ground."""
        states, change = self.whole["condition_state"].astype(str), self.whole["change_m2"].astype(float)
        return dict(zip(states, change, strict=True))


def _compare_condition(
    old_dir: Path,
    new_dir: Path,
    cfg: ReportConfig,
    crs: pyproj.CRS,
    common: Callable[[pyproj.CRS], BaseGeometry | None],
    registration: Registration,
) -> ConditionComparison | str:
    """Each epoch's area per condition state on the ground both imaged, side by side (the new
    epoch's cells moved onto the old survey); or why not."""
    old, new = _condition_cells(old_dir, cfg), _condition_cells(new_dir, cfg)
    if old is None or new is None:
        missing = " and ".join(str(folder) for folder, frame in ((old_dir, old), (new_dir, new)) if frame is None)
        return (
            f"Condition states not compared: {missing} was reported before condition states "
            "existed; re-run `msaf report` on it."
        )
    ground = common(crs)
    old, new = old.to_crs(crs), registration.move(new.to_crs(crs))

    def change(within: BaseGeometry | None) -> pd.DataFrame:
        return condition_change(quantities(old, within), quantities(new, within))

    if cfg.elements is None:
        return ConditionComparison(change(ground))
    elements = read_elements(cfg.elements, crs)
    per_element = [
        change(shapely.intersection(shape, ground) if ground is not None else shape).assign(element=name)
        for name, shape in zip(elements.names, elements.geometries, strict=True)
    ]
    table = pd.concat(per_element, ignore_index=True)
    return ConditionComparison(change(ground), table[["element", *table.columns.drop("element")]])


def _working_crs(frame: gpd.GeoDataFrame) -> pyproj.CRS:
    """Where two reports' defects are compared: ground metres over the frame (``working_crs``)."""
    return working_crs(frame.crs, tuple(frame.total_bounds)) if len(frame) else frame.crs


RATE_COLUMNS = {"delta_length_m": "delta_length_m_per_year", "widening_mm": "widening_mm_per_year"}


def with_rates(changes: gpd.GeoDataFrame, interval: FlightInterval | None) -> gpd.GeoDataFrame:
    """Growth per year between the flights (length added, widening beyond the flights' difference):
    how fast a crack is moving, which an owner schedules the next inspection by. Empty without both
    flight dates, or when the new flight is not later than the old."""
    years = interval.years if interval is not None and interval.days > 0 else math.nan
    rates = {rate: changes[change] / years if change in changes else math.nan for change, rate in RATE_COLUMNS.items()}
    return changes.assign(**rates)


FASTEST = 10  # cracks in the change report's fastest-growing table


def fastest_growing(changes: pd.DataFrame, count: int = FASTEST) -> pd.DataFrame:
    """The cracks growing fastest per year: the longest added length, then the widest widening (beyond
    the flights' difference); only those that grew in length or width (extended, widened, new)."""
    growing = changes[(changes["delta_length_m_per_year"] > 0) | (changes["widening_mm_per_year"] > 0)]
    columns = [
        "change_id",
        "crack_id",
        "status",
        "crack_type",
        "pieces",
        "delta_length_m_per_year",
        "widening_mm_per_year",
        "new_ids",
    ]
    ranked = growing.sort_values(
        ["delta_length_m_per_year", "widening_mm_per_year"], ascending=False, na_position="last"
    )
    return pd.DataFrame(ranked[[c for c in columns if c in ranked]].head(count))


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


def _crs_of(path: Path | None) -> rasterio.crs.CRS | None:
    if path is None or not path.is_file():
        return None
    with rasterio.open(path) as ds:
        return ds.crs


def _covered(lines: gpd.GeoDataFrame, other: gpd.GeoDataFrame, distance: float) -> np.ndarray:
    """Per segment of ``lines``: the share of its length within ``distance`` of ``other``'s lines."""
    if not len(lines):
        return np.zeros(0)
    if not len(other):
        return np.zeros(len(lines))
    zone = shapely.get_parts(other.geometry.buffer(distance).union_all())  # disjoint polygons
    segments = lines.geometry.to_numpy()
    # each segment against the parts of the zone it meets, not the whole zone (thousands of parts)
    which, part = shapely.STRtree(zone).query(segments, predicate="intersects")
    inside = np.bincount(
        which, weights=shapely.length(shapely.intersection(segments[which], zone[part])), minlength=len(lines)
    )
    lengths = shapely.length(segments)
    return np.divide(inside, lengths, out=np.ones_like(lengths), where=lengths > 0)


def _found(matched_m: float, length_m: float, floor_m: float) -> bool:
    """A crack is found again when twice the tolerance of it is matched, or, for one shorter than
    that, most of it: a crack of any length surveyed twice is never "new" and "not found" at once."""
    return matched_m >= min(floor_m, 0.5 * length_m)


OWN_BANDS = "each survey's own"  # each width as its survey's report read it, over its own mask's band
SAME_BAND = "same band"  # the old survey's cracks read in both orthomosaics (pipeline.report.paired_widths)


@dataclass(frozen=True)
class WidthComparison:
    """How the two flights measure the same cracks' widths: the median difference over every matched
    centreline piece (the flights' optics: focus, light, GSD; a year of cracking moves few cracks)
    and the spread of a piece's difference about it (the widths' noise)."""

    pairs: int = 0  # matched centreline pieces with a width in both surveys
    bias_mm: float = 0.0  # new - old, median; 0 with fewer than MIN_BIAS_PAIRS pieces
    noise_mm: float = 0.0  # robust standard deviation (1.4826 MAD) of a piece's difference
    band: str = OWN_BANDS  # where both widths were read (SAME_BAND: the old cracks in both orthomosaics)
    scale: float = 1.0  # SAME_BAND: new / old, median; the new widths are divided by it before the rest

    def uncertainty_mm(self, pieces: int) -> float:
        """The standard error of the median of ``pieces`` differences."""
        return 1.2533 * self.noise_mm / math.sqrt(pieces) if pieces else math.inf


MIN_BIAS_PAIRS = 20  # matched pieces needed to measure the flights' width difference and noise
WIDTH_BIAS_NOTE_MM = 0.1  # a larger difference between the flights is pointed out in the change report
WIDENING_SIGMAS = 3.0  # a crack widened when its widening exceeds this many standard errors too


def _widths_from_images(lines: gpd.GeoDataFrame) -> bool:
    """Whether a report read its crack widths from the orthomosaic: only then are both flights read
    again over the same band (a report of the mask alone compares by the masks' widths)."""
    return "width_method" in lines and not (lines["width_method"] == WIDTH_FROM_MASK).any()


def _no_pairs() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"defect_id_new": [], "defect_id_old": [], "width_mm_new": [], "width_mm_old": []}, geometry=[]
    )


def _width_pairs(new_lines: gpd.GeoDataFrame, old_lines: gpd.GeoDataFrame, distance: float) -> gpd.GeoDataFrame:
    """Each matched new centreline piece with its nearest old piece (widths ``width_mm_new``/``_old``)."""
    followed = new_lines[new_lines["covered"] > 0.5]
    if not len(followed) or not len(old_lines):
        return _no_pairs()
    return gpd.sjoin_nearest(
        followed, old_lines[["defect_id", "width_mm", "geometry"]], max_distance=distance, lsuffix="new", rsuffix="old"
    )


def _same_band_pairs(paired: gpd.GeoDataFrame, new_lines: gpd.GeoDataFrame, distance: float) -> gpd.GeoDataFrame:
    """The old cracks' pieces read in both orthomosaics, each on the nearest followed new crack
    (``read_paired_widths``; the same columns as ``_width_pairs``)."""
    followed = new_lines.loc[new_lines["covered"] > 0.5, ["defect_id", "geometry"]]
    if not len(followed) or not len(paired):
        return _no_pairs()
    return gpd.sjoin_nearest(
        paired.rename(columns={"defect_id": "defect_id_old"}),
        followed.rename(columns={"defect_id": "defect_id_new"}),
        max_distance=distance,
    )


def _width_comparison(pairs: gpd.GeoDataFrame, band: str) -> WidthComparison:
    differences = (pairs["width_mm_new"] - pairs["width_mm_old"]).to_numpy(float)
    differences = differences[np.isfinite(differences)]
    if len(differences) < MIN_BIAS_PAIRS:
        return WidthComparison(pairs=len(differences), band=band)
    bias = float(np.median(differences))
    return WidthComparison(len(differences), bias, float(1.4826 * np.median(np.abs(differences - bias))), band)


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
    WIDENING_SIGMAS standard errors of that median: two flights of unchanged ground read widths
    differently (a blurrier flight reads every crack wider), and without this most cracks of a
    reflown structure came out widened (bench/change_stability.py). That threshold is each crack's
    ``detectable_widening_mm``: a crack rated unchanged may have widened by up to it
    (bench/widening_detection.py measures how much real widening is found).
    """
    units = 1 / linear_unit_m(crs)
    distance = cfg.match_distance_m * units
    floor_m = 2 * cfg.match_distance_m
    new_lines = new_lines.assign(covered=_covered(new_lines, old_lines, distance))
    old_lines = old_lines.assign(covered=_covered(old_lines, new_lines, distance))
    scale = 1.0
    if paired is not None and len(paired):
        pairs, band = _same_band_pairs(paired, new_lines, distance), SAME_BAND
        # over the same band a width is darkness / core contrast, and each flight learns its own
        # contrast: the flights differ by a factor (blur moves a survey's contrast model), not a sum
        ratios = (pairs["width_mm_new"] / pairs["width_mm_old"]).to_numpy(float)
        ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
        if len(ratios) >= MIN_BIAS_PAIRS:
            scale = float(np.exp(np.median(np.log(ratios))))
            pairs = pairs.assign(width_mm_new=pairs["width_mm_new"] / scale)
    else:
        pairs, band = _width_pairs(new_lines, old_lines, distance), OWN_BANDS
    widths = replace(_width_comparison(pairs, band), scale=scale)
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
    if len(lost):
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
    return rows, widths


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
    crs = _working_crs(old if len(old) else new)
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
    rows = crack_rows + rows
    changes = (
        gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
        if rows
        else gpd.GeoDataFrame({"status": [], "class": []}, geometry=gpd.GeoSeries([], crs=crs))
    )
    if len(changes) and coverage is not None:
        unseen = changes["status"].isin((ChangeStatus.NEW.value, NOT_FOUND)).to_numpy() & _outside(
            changes.geometry, coverage(crs)
        )
        changes.loc[unseen, "status"] = NOT_COVERED
    return ChangeMatch(_numbered(changes), widths)


def _numbered(changes: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Changes in the order of STATUSES, then north to south and west to east, numbered from 1."""
    changes = changes.drop(columns="change_id", errors="ignore")
    if len(changes):
        order = changes["status"].map({s: i for i, s in enumerate(STATUSES)})
        changes = changes.assign(_o=order, _y=-changes.geometry.bounds["maxy"], _x=changes.geometry.bounds["minx"])
        changes = changes.sort_values(["_o", "_y", "_x"]).drop(columns=["_o", "_y", "_x"]).reset_index(drop=True)
    changes.insert(0, "change_id", np.arange(1, len(changes) + 1))
    return changes


def _seen_in_images(
    changes: gpd.GeoDataFrame,
    old_lines: gpd.GeoDataFrame,
    new_lines: gpd.GeoDataFrame,
    registration: Registration,
    images: tuple[Path, Path],
    cfg: ReportConfig,
) -> gpd.GeoDataFrame:
    """New and not-found cracks re-read in both orthomosaics (``pipeline.report.visibility``): one the
    new survey missed whose line still shows is "not detected (still visible)", a new one whose line
    the old image already showed "missed before (visible then)"; each gets both images' line contrast.
    ``old_lines`` and ``new_lines`` lie in the old survey's frame (the working CRS)."""
    crs = changes.crs
    checked = changes["class"].isin(cfg.crack_classes) & changes["status"].isin((NOT_FOUND, ChangeStatus.NEW.value))
    pieces = [
        (old_lines if row.status == NOT_FOUND else new_lines)
        .loc[
            lambda lines, row=row: lines["defect_id"].isin(
                ids_of(row.old_ids if row.status == NOT_FOUND else row.new_ids)
            )
        ]
        .assign(change_id=row.change_id)
        for row in changes[checked].itertuples()
    ]
    changes = changes.assign(line_contrast_old=np.nan, line_contrast_new=np.nan)
    pieces = [p for p in pieces if len(p)]
    if not pieces:
        return changes
    lines = gpd.GeoDataFrame(pd.concat(pieces, ignore_index=True), crs=crs)
    old_image, new_image = GroundImage(images[0], crs), GroundImage(images[1], crs)
    pixel = max(old_image.pixel(), new_image.pixel())
    in_old = line_contrast(old_image, lines, "change_id", pixel)
    in_new = line_contrast(new_image, registration.move_back(lines), "change_id", pixel)
    changes["line_contrast_old"] = changes["change_id"].map(in_old).astype(float)
    changes["line_contrast_new"] = changes["change_id"].map(in_new).astype(float)
    for index, row in changes[checked].iterrows():
        if row["status"] == NOT_FOUND and still_visible(in_new[row["change_id"]], in_old[row["change_id"]]):
            changes.loc[index, "status"] = ChangeStatus.NOT_DETECTED.value
        elif row["status"] == ChangeStatus.NEW and still_visible(in_old[row["change_id"]], in_new[row["change_id"]]):
            changes.loc[index, "status"] = ChangeStatus.MISSED_BEFORE.value
    return changes


def _survey_bounds(survey_dir: Path, crs: pyproj.CRS) -> tuple[float, float, float, float]:
    """A survey's mask extent in ``crs`` (a unit square when there is no mask to read)."""
    mask = SurveyFolder(survey_dir).mask
    if not mask.is_file():
        return (0.0, 0.0, 1.0, 1.0)
    with rasterio.open(mask) as ds:
        return tuple(rasterio.warp.transform_bounds(ds.crs, crs, *ds.bounds))


def _pixel_in(survey_dir: Path, crs: pyproj.CRS) -> float:
    """A survey's ground pixel in ``crs``'s units (1 mm when it has no mask to read): sizes labels."""
    mask = SurveyFolder(survey_dir).mask
    if not mask.is_file():
        return 0.001 / linear_unit_m(crs)
    with rasterio.open(mask) as ds:
        return ground_sample_distance(ds.crs, ds.transform, ds.width, ds.height) / linear_unit_m(crs)


def refuse_survey_folder(out_dir: Path) -> None:
    """A change report never goes into a survey folder (either compared one or any other): its
    report.html is that survey's report."""
    if any((out_dir / name).exists() for name in SURVEY_OUTPUTS):
        raise MsafError(
            f"{out_dir} is a survey folder: the change report would replace its report.html; choose another --out"
        )


def compare_surveys(
    old_dir: str | Path,
    new_dir: str | Path,
    out_dir: str | Path,
    cfg: ReportConfig,
    old_image: Path | None = None,
    new_image: Path | None = None,
) -> dict[str, Any]:
    """Write changes.gpkg (changes, summary, registration), .geojson, .csv, .dxf and report.html into ``out_dir``.

    The new survey is first moved onto the old one by the offset measured between their
    orthomosaics (``old_image``/``new_image``, else each survey's input if still in place;
    ``report.registration``).

    The surveys are only read: GDAL's .aux.xml side files (statistics, masks) are never written
    beside them (``GDAL_PAM_ENABLED=NO``)."""
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        return _compare(Path(old_dir), Path(new_dir), Path(out_dir), cfg, old_image, new_image)


def _compare(
    old_dir: Path, new_dir: Path, out_dir: Path, cfg: ReportConfig, old_image: Path | None, new_image: Path | None
) -> dict[str, Any]:
    refuse_survey_folder(out_dir)  # before reading anything: OLD itself is the usual slip
    old, new = load_defects(old_dir, cfg), load_defects(new_dir, cfg)
    old_record, new_record = read_survey_record(old_dir), read_survey_record(new_dir)
    old_ortho, new_ortho = survey_image(old_record, old_image), survey_image(new_record, new_image)
    crs = _working_crs(old if len(old) else new)

    @cache  # asked by the registration, the matching and the condition states: traced once
    def footprints(crs: pyproj.CRS) -> tuple[BaseGeometry, BaseGeometry] | None:
        traced = survey_footprint(old_dir, crs), survey_footprint(new_dir, crs)
        if traced[0] is None or traced[1] is None:
            return None
        if shapely.intersection(*traced).area <= 0:
            raise MsafError(
                f"{old_dir} and {new_dir} image no common ground (their footprints do not overlap: another "
                "structure, an empty survey or a wrong CRS); compare two surveys of the same structure"
            )
        return traced

    traced = footprints(crs)
    masks = SurveyFolder(old_dir).mask, SurveyFolder(new_dir).mask
    registration = register_epochs(
        old_ortho,
        new_ortho,
        crs,
        shapely.intersection(*traced) if traced else None,
        cfg.registration,
        masks if all(mask.is_file() for mask in masks) else None,
    )

    def both_imaged(crs: pyproj.CRS) -> BaseGeometry | None:
        traced = footprints(crs)
        return None if traced is None else shapely.intersection(traced[0], registration.move_geometry(traced[1]))

    old_lines = load_defects(old_dir, cfg, "crack_centerlines")
    new_lines = registration.move(load_defects(new_dir, cfg, "crack_centerlines").to_crs(crs))
    paired = None
    old_mask = SurveyFolder(old_dir).mask
    if (
        cfg.width_band == "same"
        and old_ortho is not None
        and new_ortho is not None
        and old_mask.is_file()
        and _widths_from_images(old_lines)
        and _widths_from_images(new_lines)
    ):
        paired = read_paired_widths(
            old_mask,
            old[old["class"].isin(cfg.crack_classes)],
            (old_ortho, new_ortho),
            registration,
            crs,
        )
    matched = match_defects(old, registration.move(new.to_crs(crs)), cfg, old_lines, new_lines, both_imaged, paired)
    changes, widths = matched.changes, matched.widths
    if old_ortho is not None and new_ortho is not None and len(changes):
        changes = _seen_in_images(
            changes, old_lines.to_crs(changes.crs), new_lines, registration, (old_ortho, new_ortho), cfg
        )
    changes = _not_seen(
        changes,
        _unrated_ground(old_dir, cfg, changes.crs),
        registration.move_geometry(_unrated_ground(new_dir, cfg, changes.crs)),
    )
    changes = _numbered(changes)  # once, after the images have settled every status
    interval = flight_interval(old_record, new_record)
    changes = with_rates(changes, interval)
    cracks = with_rates(changes_per_crack(changes, new, cfg.crack_classes), interval)
    summary = pd.DataFrame([{"status": s, "count": int((changes["status"] == s).sum())} for s in STATUSES])
    condition = _compare_condition(old_dir, new_dir, cfg, changes.crs, both_imaged, registration)
    prepare_output_folder(out_dir, CHANGE_OUTPUTS)
    layers: dict[str, gpd.GeoDataFrame | pd.DataFrame] = {
        "changes": changes,
        "summary": summary,
        "registration": pd.DataFrame([registration.as_row()]),
        "width_comparison": pd.DataFrame([asdict(widths)]),
    }
    if len(cracks):
        layers["crack_changes"] = cracks
    if isinstance(condition, ConditionComparison):
        layers["condition_change"] = condition.whole
        if condition.by_element is not None:
            layers["condition_change_by_element"] = condition.by_element
    write_geopackage(out_dir / CHANGES_GPKG, layers)
    write_geojson(out_dir / CHANGES_GEOJSON, changes, "changes")
    with atomic_output(out_dir / CHANGES_CSV) as tmp:
        pd.DataFrame(changes.drop(columns="geometry")).to_csv(tmp, index=False)
    write_change_dxf(out_dir / CHANGES_DXF, changes, _pixel_in(old_dir, changes.crs))
    differences = method_differences(old_record, new_record)
    ortho = old_ortho if old_ortho or registration.applied else new_ortho  # the changes lie on the old survey
    bounds = tuple(changes.total_bounds) if len(changes) else tuple(new.to_crs(changes.crs).total_bounds)
    if not np.isfinite(bounds).all():  # two defect-free surveys: the map shows the new survey's extent
        bounds = _survey_bounds(new_dir, changes.crs)
    pad = max(bounds[2] - bounds[0], bounds[3] - bounds[1], 1e-6) * 0.05
    bounds = (bounds[0] - pad, bounds[1] - pad, bounds[2] + pad, bounds[3] + pad)
    units = linear_unit_m(changes.crs)
    same_crs = _crs_of(ortho) == changes.crs
    page = Page(
        title=f"Change report: {old_dir.name} → {new_dir.name}",
        subtitle=", ".join(f"{row['count']} {row['status']}" for _, row in summary.iterrows()),
        overview=figures.overview_map(
            ortho if same_crs else None,
            bounds,
            changes,
            "status",
            styles.STATUS_COLOURS,
            units,
            "Changes since the previous survey",
        ),
        has_defects=bool(len(changes)),
        tables=[("Summary", summary.to_html(index=False, border=0))],
        provenance={
            "old survey": str(old_dir),
            "new survey": str(new_dir),
            "working CRS": changes.crs.to_string(),
            "registration": registration.summary(),
            "between the flights": interval.describe() if interval else "unknown (give both surveys a flight_date)",
            "crack widths, new - old": _width_summary(widths),
            "match distance": f"{cfg.match_distance_m} m",
            "change tolerance": f"{cfg.change_tolerance:.0%}",
        },
    )
    if differences:
        page.notes.append(
            (
                "warning",
                "The two surveys were not made the same way (" + "; ".join(differences) + "): part of what "
                "looks new, extended, widened or not found may come from the method, not from the "
                "structure. Survey both epochs with the same model and settings to compare them.",
            )
        )
    page.notes.extend(_registration_notes(registration, cfg))
    if widths.pairs >= MIN_BIAS_PAIRS and abs(widths.bias_mm) >= WIDTH_BIAS_NOTE_MM:
        page.notes.append(
            (
                "note",
                f"The new flight reads the same cracks {abs(widths.bias_mm):.2f} mm "
                f"{'wider' if widths.bias_mm > 0 else 'narrower'} (median over {widths.pairs} matched "
                "centreline pieces): the flights' optics differ (focus, light, GSD), not the cracks. Widening "
                f"is judged beyond this difference and the widths' noise ({widths.noise_mm:.2f} mm per piece); "
                "compare the two reports' widths with it in mind.",
            )
        )
    page.notes.extend(_detectable_widening_note(changes))
    if isinstance(condition, ConditionComparison):
        page.tables.append(
            (
                "Condition states (cracking) on the ground both surveys imaged, m²",
                condition.whole.to_html(index=False, border=0, float_format="{:,.4g}".format),
            )
        )
        if condition.by_element is not None:
            page.tables.append(
                (
                    "Condition states per element on the ground both surveys imaged, m²",
                    condition.by_element.to_html(index=False, border=0, float_format="{:,.4g}".format),
                )
            )
    else:
        page.notes.append(("note", condition))
    rolled = cracks[cracks["pieces"] > 1]
    if len(rolled):
        page.tables.append(
            (
                f"Changes per crack: {len(rolled)} cracks of several pieces of mask, rated together "
                "(a piece found again beside a new one is a crack that grew)",
                pd.DataFrame(rolled.drop(columns="geometry")).to_html(
                    index=False, border=0, float_format="{:,.4g}".format, na_rep=""
                ),
            )
        )
    ranked = cracks if len(cracks) else changes  # per crack where the new report has crack ids
    if interval is not None and interval.days > 0 and len(growing := fastest_growing(ranked)):
        page.tables.append(
            (
                f"Fastest-growing cracks ({interval.describe()})",
                growing.to_html(index=False, border=0, float_format="{:,.4g}".format, na_rep=""),
            )
        )
    if len(changes):
        columns = [c for c in changes.columns if c != "geometry"]
        page.tables.append(
            (
                "Changes",
                pd.DataFrame(changes[columns]).to_html(index=False, border=0, float_format="{:,.4g}".format, na_rep=""),
            )
        )
    with atomic_output(out_dir / SurveyFolder.HTML) as tmp:
        tmp.write_text(page.render())
    return {
        "changes": {row["status"]: int(row["count"]) for _, row in summary.iterrows()},
        "cracks": {status: n for status in STATUSES if (n := int((cracks["status"] == status).sum()))},
        "outputs": list(CHANGE_OUTPUTS),
        "method_differences": differences,
        "condition_change_m2": condition.change_m2 if isinstance(condition, ConditionComparison) else {},
        "registration": registration,
        "widths": widths,
    }


def _detectable_widening_note(changes: gpd.GeoDataFrame) -> list[tuple[str, str]]:
    """What "unchanged" leaves open: the widening each crack needed to be told from the noise."""
    if "detectable_widening_mm" not in changes:
        return []
    detectable = changes["detectable_widening_mm"].to_numpy(float)
    detectable = detectable[np.isfinite(detectable)]
    if not len(detectable):
        return []
    low, middle, high = np.percentile(detectable, [10, 50, 90])
    return [
        (
            "note",
            f"A crack rated unchanged may still have widened by up to its detectable_widening_mm: "
            f"{middle:.2f} mm at the median over the {len(detectable)} cracks whose widths both flights "
            f"measured ({low:.2f}–{high:.2f} mm from the 10th to the 90th percentile). It is the larger of "
            f"the change tolerance of the crack's width and {WIDENING_SIGMAS:g} standard errors of its "
            "widening: the widths of the same crack differ between two flights by about this much without "
            "any change.",
        )
    ]


def _width_summary(widths: WidthComparison) -> str:
    if widths.pairs < MIN_BIAS_PAIRS:
        return f"not measured ({widths.pairs} matched centreline pieces with widths; {MIN_BIAS_PAIRS} needed)"
    read = (
        f"the old survey's cracks read in both orthomosaics over the same band, the new widths divided by "
        f"{widths.scale:.2f}, the flights' median ratio"
        if widths.band == SAME_BAND
        else "each survey's own widths (an orthomosaic missing: each over its own mask's band)"
    )
    return (
        f"{widths.bias_mm:+.2f} mm median over {widths.pairs} matched centreline pieces, noise "
        f"{widths.noise_mm:.2f} mm per piece ({read}): widening is judged beyond both"
    )


def _registration_notes(registration: Registration, cfg: ReportConfig) -> list[tuple[str, str]]:
    """What the reader of a change report must know about how the epochs were aligned."""
    tolerance_mm = cfg.match_distance_m * 1000
    if registration.method == "none":
        return [
            (
                "warning",
                f"The surveys were compared as they lie, not registered: {registration.note}. Cracks are matched "
                f"within {tolerance_mm:.3g} mm; if the two flights are further apart than that, unchanged cracks "
                "come out as new and not found.",
            )
        ]
    if registration.applied and registration.spread_m > cfg.match_distance_m / 2:
        return [
            (
                "warning",
                f"The orthomosaics' windows lie {registration.spread_m * 1000:.3g} mm (RMS) from the fitted shift, "
                "turn and scale: one of the epochs is warped (another surface model, a rolling shutter), and changes "
                f"near the {tolerance_mm:.3g} mm tolerance may be registration, not the structure.",
            )
        ]
    return []


def method_differences(old: SurveyRecord | None, new: SurveyRecord | None) -> list[str]:
    """What differs in how two surveys were made (model, views, flips, decision thresholds, the GSD
    the model saw, the shadow lift's floor), each as "what: old -> new"; empty when the same or when a
    record is missing."""
    if old is None or new is None:
        return []

    def views(record: SurveyRecord) -> str:
        return scales_key(record.scales) + (" + flips" if record.tta else "")

    def gsd(record: SurveyRecord) -> str:
        working = record.model_gsd_m
        return f"{working * 1000:.3g} mm" if working else "unknown"

    def thresholds(record: SurveyRecord) -> str:
        return ", ".join(f"{n} {t:g}" for n, t in sorted((record.thresholds or {}).items())) or "argmax"

    aspects: dict[str, Callable[[SurveyRecord], str]] = {
        "model": lambda r: f"{r.model.name} {r.model.sha256[:12]}",
        "views": views,
        "GSD the model saw": gsd,
    }
    if old.thresholds is not None and new.thresholds is not None:  # recorded by both (this release on)
        aspects["thresholds"] = thresholds
    if old.exposure_floor is not None and new.exposure_floor is not None:
        aspects["exposure floor"] = lambda r: f"{r.exposure_floor:g}"
    return [f"{what}: {show(old)} -> {show(new)}" for what, show in aspects.items() if show(old) != show(new)]
