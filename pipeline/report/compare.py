"""Survey-to-survey change tracking: the change report of two surveys of one structure.

The new survey is moved onto the old one (``pipeline.report.registration``), their defects matched
in a projected frame (``pipeline.report.change_matching``: the old survey's CRS, or its UTM zone when
it is geographic), within ``match_distance_m``. Where both orthomosaics are at hand, the old cracks
are read again in both over the same band (``pipeline.report.paired_widths``) and new and
not-found cracks are looked for in them (``pipeline.report.visibility``): a not-found crack whose
line the new image still shows is "not detected (still visible)", a new one the old image already
showed "missed before (visible then)". A new defect where the old orthomosaic could not show one
(too dark, overexposed or too blurred there: the old report's condition cells), or a lost one where
the new could not, is "not seen (too dark or blurred)": neither new nor repaired
(``pipeline.report.condition_comparison``). ``ChangeStatus`` owns the words.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rasterio
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.config import ReportConfig
from pipeline.errors import MsafError
from pipeline.fsutil import atomic_output
from pipeline.raster.ground import ground_sample_distance, linear_unit_m
from pipeline.raster.ground_image import GroundImage
from pipeline.report.build import survey_image
from pipeline.report.cad import write_change_dxf
from pipeline.report.change_matching import NOT_FOUND, STATUSES, match_defects, numbered, working_crs_of
from pipeline.report.change_page import change_page
from pipeline.report.change_status import ChangeStatus
from pipeline.report.condition_comparison import ConditionComparison, compare_condition, not_seen, unrated_ground
from pipeline.report.crack_changes import changes_per_crack, ids_of
from pipeline.report.epochs import FlightInterval, flight_interval
from pipeline.report.footprint import survey_footprint
from pipeline.report.outputs import write_geojson, write_geopackage
from pipeline.report.paired_widths import read_paired_widths
from pipeline.report.registration import Registration, register_epochs
from pipeline.report.survey_layers import load_defects
from pipeline.report.visibility import line_contrast, still_visible
from pipeline.report.width_comparison import WidthComparison, widths_from_images
from pipeline.survey_folder import SURVEY_OUTPUTS, SurveyFolder, prepare_output_folder
from pipeline.survey_record import method_differences, read_survey_record

CHANGES_GPKG, CHANGES_GEOJSON, CHANGES_CSV = "changes.gpkg", "changes.geojson", "changes.csv"
CHANGES_DXF = "changes.dxf"
CHANGE_OUTPUTS = (CHANGES_GPKG, CHANGES_GEOJSON, CHANGES_CSV, CHANGES_DXF, SurveyFolder.HTML)
RATE_COLUMNS = {"delta_length_m": "delta_length_m_per_year", "widening_mm": "widening_mm_per_year"}


@dataclass(frozen=True)
class ChangeFindings:
    """What comparing two surveys found, before anything is written: the layers and the page's content."""

    old_dir: Path
    new_dir: Path
    new: gpd.GeoDataFrame  # the new survey's defects as its report wrote them (the map's extent without changes)
    changes: gpd.GeoDataFrame  # one row per change, numbered, in the working CRS
    cracks: gpd.GeoDataFrame  # one row per crack of the new survey (``changes_per_crack``)
    registration: Registration
    widths: WidthComparison
    condition: ConditionComparison | str  # or why the condition states were not compared
    interval: FlightInterval | None
    method_differences: list[str]
    old_image: Path | None
    new_image: Path | None

    @property
    def summary(self) -> pd.DataFrame:
        """The number of changes per status, every status listed."""
        return pd.DataFrame([{"status": s, "count": int((self.changes["status"] == s).sum())} for s in STATUSES])


@dataclass(frozen=True)
class ChangeReport:
    """What ``compare_surveys`` wrote (``outputs``, in its folder) and the numbers a caller prints or files."""

    changes: dict[str, int]  # changes per status, every status
    cracks: dict[str, int]  # cracks of the new survey per status, the statuses that occur
    outputs: tuple[str, ...]
    method_differences: list[str]
    condition_change_m2: dict[str, float]  # per condition state; empty when not compared
    registration: Registration
    widths: WidthComparison


def with_rates(changes: gpd.GeoDataFrame, interval: FlightInterval | None) -> gpd.GeoDataFrame:
    """Growth per year between the flights (length added, widening beyond the flights' difference):
    how fast a crack is moving, which an owner schedules the next inspection by. Empty without both
    flight dates, or when the new flight is not later than the old."""
    years = interval.years if interval is not None and interval.days > 0 else math.nan
    rates = {rate: changes[change] / years if change in changes else math.nan for change, rate in RATE_COLUMNS.items()}
    return changes.assign(**rates)


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
) -> ChangeReport:
    """Write changes.gpkg (changes, summary, registration, ...), .geojson, .csv, .dxf and report.html into ``out_dir``.

    The new survey is first moved onto the old one by the offset measured between their
    orthomosaics (``old_image``/``new_image``, else each survey's input if still in place;
    ``report.registration``).

    The surveys are only read: GDAL's .aux.xml side files (statistics, masks) are never written
    beside them (``GDAL_PAM_ENABLED=NO``)."""
    out_dir = Path(out_dir)
    refuse_survey_folder(out_dir)  # before reading anything: OLD itself is the usual slip
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        found = find_changes(Path(old_dir), Path(new_dir), cfg, old_image, new_image)
        _write_changes(out_dir, found, cfg)
    cracks = found.cracks
    return ChangeReport(
        changes={row["status"]: int(row["count"]) for _, row in found.summary.iterrows()},
        cracks={status: n for status in STATUSES if (n := int((cracks["status"] == status).sum()))},
        outputs=CHANGE_OUTPUTS,
        method_differences=found.method_differences,
        condition_change_m2=found.condition.change_m2 if isinstance(found.condition, ConditionComparison) else {},
        registration=found.registration,
        widths=found.widths,
    )


def find_changes(
    old_dir: Path, new_dir: Path, cfg: ReportConfig, old_image: Path | None = None, new_image: Path | None = None
) -> ChangeFindings:
    """Register the two surveys, match their defects, settle each change's status with both
    orthomosaics and condition maps where at hand, and compare their condition states."""
    old, new = load_defects(old_dir, cfg), load_defects(new_dir, cfg)
    old_record, new_record = read_survey_record(old_dir), read_survey_record(new_dir)
    old_ortho, new_ortho = survey_image(old_record, old_image), survey_image(new_record, new_image)
    crs = working_crs_of(old if len(old) else new)

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
        and widths_from_images(old_lines)
        and widths_from_images(new_lines)
    ):
        paired = read_paired_widths(
            old_mask,
            old[old["class"].isin(cfg.crack_classes)],
            (old_ortho, new_ortho),
            registration,
            crs,
        )
    matched = match_defects(old, registration.move(new.to_crs(crs)), cfg, old_lines, new_lines, both_imaged, paired)
    changes = matched.changes
    if old_ortho is not None and new_ortho is not None and len(changes):
        changes = _seen_in_images(
            changes, old_lines.to_crs(changes.crs), new_lines, registration, (old_ortho, new_ortho), cfg
        )
    changes = not_seen(
        changes,
        unrated_ground(old_dir, cfg, changes.crs),
        registration.move_geometry(unrated_ground(new_dir, cfg, changes.crs)),
    )
    interval = flight_interval(old_record, new_record)
    changes = with_rates(numbered(changes), interval)  # numbered once, after the images settled every status
    return ChangeFindings(
        old_dir=old_dir,
        new_dir=new_dir,
        new=new,
        changes=changes,
        cracks=with_rates(changes_per_crack(changes, new, cfg.crack_classes), interval),
        registration=registration,
        widths=matched.widths,
        condition=compare_condition(old_dir, new_dir, cfg, changes.crs, both_imaged, registration),
        interval=interval,
        method_differences=method_differences(old_record, new_record),
        old_image=old_ortho,
        new_image=new_ortho,
    )


def _write_changes(out_dir: Path, found: ChangeFindings, cfg: ReportConfig) -> None:
    """The change report's files: every layer in changes.gpkg, the changes as GeoJSON, CSV and DXF, the page."""
    changes, condition = found.changes, found.condition
    prepare_output_folder(out_dir, CHANGE_OUTPUTS)
    layers: dict[str, gpd.GeoDataFrame | pd.DataFrame] = {
        "changes": changes,
        "summary": found.summary,
        "registration": pd.DataFrame([found.registration.as_row()]),
        "width_comparison": pd.DataFrame([asdict(found.widths)]),
    }
    if len(found.cracks):
        layers["crack_changes"] = found.cracks
    if isinstance(condition, ConditionComparison):
        layers["condition_change"] = condition.whole
        if condition.by_element is not None:
            layers["condition_change_by_element"] = condition.by_element
    write_geopackage(out_dir / CHANGES_GPKG, layers)
    write_geojson(out_dir / CHANGES_GEOJSON, changes, "changes")
    with atomic_output(out_dir / CHANGES_CSV) as tmp:
        pd.DataFrame(changes.drop(columns="geometry")).to_csv(tmp, index=False)
    write_change_dxf(out_dir / CHANGES_DXF, changes, _pixel_in(found.old_dir, changes.crs))
    page = change_page(found, cfg)
    with atomic_output(out_dir / SurveyFolder.HTML) as tmp:
        tmp.write_text(page.render())
