"""The change report's page (report.html beside changes.gpkg): the map of changes, what the reader
must know about how the two surveys were aligned and measured, and the tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rasterio
import rasterio.warp

from pipeline import styles
from pipeline.config import ReportConfig
from pipeline.raster.ground import linear_unit_m
from pipeline.report import figures
from pipeline.report.build import plain_number, table_html
from pipeline.report.condition_comparison import ConditionComparison
from pipeline.report.html import Page
from pipeline.report.registration import Registration
from pipeline.report.width_comparison import WIDENING_SIGMAS
from pipeline.survey_folder import SurveyFolder

if TYPE_CHECKING:
    from pipeline.report.compare import ChangeFindings

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


def detectable_widening_note(changes: gpd.GeoDataFrame) -> list[tuple[str, str]]:
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


def registration_notes(registration: Registration, cfg: ReportConfig) -> list[tuple[str, str]]:
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


def _survey_bounds(survey_dir: Path, crs: pyproj.CRS) -> tuple[float, float, float, float]:
    """A survey's mask extent in ``crs`` (a unit square when there is no mask to read)."""
    mask = SurveyFolder(survey_dir).mask
    if not mask.is_file():
        return (0.0, 0.0, 1.0, 1.0)
    with rasterio.open(mask) as ds:
        return tuple(rasterio.warp.transform_bounds(ds.crs, crs, *ds.bounds))


def _crs_of(path: Path | None) -> rasterio.crs.CRS | None:
    if path is None or not path.is_file():
        return None
    with rasterio.open(path) as ds:
        return ds.crs


def _map_bounds(found: ChangeFindings) -> tuple[float, float, float, float]:
    """The changes' extent, padded by 5 %; the new survey's defects' or mask's where there are none."""
    changes = found.changes
    bounds = tuple(changes.total_bounds) if len(changes) else tuple(found.new.to_crs(changes.crs).total_bounds)
    if not np.isfinite(bounds).all():  # two defect-free surveys: the map shows the new survey's extent
        bounds = _survey_bounds(found.new_dir, changes.crs)
    pad = max(bounds[2] - bounds[0], bounds[3] - bounds[1], 1e-6) * 0.05
    return (bounds[0] - pad, bounds[1] - pad, bounds[2] + pad, bounds[3] + pad)


def change_page(found: ChangeFindings, cfg: ReportConfig) -> Page:
    """The change report's page, in the old survey's frame: the changes on the old orthomosaic."""
    changes, summary, registration, widths = found.changes, found.summary, found.registration, found.widths
    ortho = found.old_image if found.old_image or registration.applied else found.new_image
    page = Page(
        title=f"Change report: {found.old_dir.name} → {found.new_dir.name}",
        subtitle=", ".join(f"{row['count']} {row['status']}" for _, row in summary.iterrows()),
        overview=figures.overview_map(
            ortho if _crs_of(ortho) == changes.crs else None,
            _map_bounds(found),
            changes,
            "status",
            styles.STATUS_COLOURS,
            linear_unit_m(changes.crs),
            "Changes since the previous survey",
        ),
        has_defects=bool(len(changes)),
        tables=[("Summary", summary.to_html(index=False, border=0))],
        provenance={
            "old survey": str(found.old_dir),
            "new survey": str(found.new_dir),
            "working CRS": changes.crs.to_string(),
            "registration": registration.summary(),
            "between the flights": found.interval.describe()
            if found.interval
            else "unknown (give both surveys a flight_date)",
            "crack widths, new - old": widths.describe(),
            "match distance": f"{cfg.match_distance_m} m",
            "change tolerance": f"{cfg.change_tolerance:.0%}",
        },
    )
    if found.method_differences:
        page.notes.append(
            (
                "warning",
                "The two surveys were not made the same way (" + "; ".join(found.method_differences) + "): part "
                "of what looks new, extended, widened or not found may come from the method, not from the "
                "structure. Survey both epochs with the same model and settings to compare them.",
            )
        )
    page.notes.extend(registration_notes(registration, cfg))
    if (difference := widths.difference_note()) is not None:
        page.notes.append(("note", difference))
    page.notes.extend(detectable_widening_note(changes))
    condition = found.condition
    if isinstance(condition, ConditionComparison):
        page.tables.append(
            (
                "Condition states (cracking) on the ground both surveys imaged, m²",
                condition.whole.to_html(index=False, border=0, float_format=plain_number),
            )
        )
        if condition.by_element is not None:
            page.tables.append(
                (
                    "Condition states per element on the ground both surveys imaged, m²",
                    condition.by_element.to_html(index=False, border=0, float_format=plain_number),
                )
            )
    else:
        page.notes.append(("note", condition))
    cracks = found.cracks
    rolled = cracks[cracks["pieces"] > 1]
    if len(rolled):
        page.tables.append(
            (
                f"Changes per crack: {len(rolled)} cracks of several pieces of mask, rated together "
                "(a piece found again beside a new one is a crack that grew)",
                table_html(pd.DataFrame(rolled.drop(columns="geometry"))),
            )
        )
    ranked = cracks if len(cracks) else changes  # per crack where the new report has crack ids
    interval = found.interval
    if interval is not None and interval.days > 0 and len(growing := fastest_growing(ranked)):
        page.tables.append((f"Fastest-growing cracks ({interval.describe()})", table_html(growing)))
    if len(changes):
        page.tables.append(("Changes", table_html(pd.DataFrame(changes.drop(columns="geometry")))))
    return page
