"""`msaf report SURVEY_DIR`: defect tables + GIS files + a self-contained HTML report."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.errors import RasterioIOError

from pipeline import fingerprint, styles
from pipeline.class_ids import NO_CLASS
from pipeline.config import ConditionConfig, ElementsConfig, ReportConfig
from pipeline.errors import MsafError
from pipeline.fsutil import atomic_output, disk_error, is_disk_full
from pipeline.job import job_axis, job_rows
from pipeline.processes import Aside, processes_for
from pipeline.raster.ground import STRONG_DISTORTION, ground_pixel_size
from pipeline.raster.source import orthomosaic_bands
from pipeline.raster.trust import driver_for, is_virtual, locate
from pipeline.report import figures
from pipeline.report.component_measure import MIN_FOR_PROCESSES, open_mask
from pipeline.report.condition import (
    NOT_CHECKED,
    OVEREXPOSED,
    TOO_BLURRED,
    TOO_DARK,
    ConditionStates,
    assess_condition,
)
from pipeline.report.crack_types import StructureAxes, cracks_by_type, types_table
from pipeline.report.defects import SEVERITIES, UNMEASURED, DefectTables, build_defects
from pipeline.report.elements import Elements, quantities_by_element, read_elements
from pipeline.report.figures import MapLabel
from pipeline.report.footprint import survey_footprint
from pipeline.report.html import Page
from pipeline.report.outputs import write_files
from pipeline.report.result import ReportResult
from pipeline.report.width import WIDTH_FROM_MASK, WIDTH_UNMEASURED, WIDTH_UPPER_BOUND
from pipeline.review import refuse_losing_review
from pipeline.survey_folder import REPORT_OUTPUTS, SurveyFolder, exclusive, refuse_overwriting
from pipeline.survey_record import SurveyRecord, read_survey_record

SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
MOST_SEVERE = 25  # defects named in the "Most severe" table and by id on the overview map


def _gpkg_metadata(record: SurveyRecord | None, job: dict[str, Any]) -> dict[str, str]:
    """Job details and provenance as GeoPackage metadata (GIS clients show it with the file)."""
    meta = {f"job_{key}": str(value) for key, value in job.items()}
    if record:
        meta |= {
            "source": record.input.path,
            "processed_utc": record.created_utc,
            "model": f"{record.model.name} sha256 {record.model.sha256}",
            "software": f"msaf-pipeline {record.software_version}",
        }
    return {k: v for k, v in meta.items() if v}


def check_same_run(survey_dir: Path, record: SurveyRecord | None) -> None:
    """mask.tif, confidence.tif and survey.json must come from one run, on one grid."""
    folder = SurveyFolder(survey_dir)
    mask_path, confidence_path = folder.mask, folder.confidence
    with open_mask(mask_path) as mask:
        created = mask.tags().get("MSAF_CREATED_UTC")
        grid = (mask.width, mask.height, mask.transform, mask.crs)
    if record and created and record.created_utc != created:
        raise MsafError(
            f"{survey_dir}: mask.tif ({created}) and survey.json ({record.created_utc}) come from "
            "different runs; rerun `msaf survey` into this folder"
        )
    if confidence_path.is_file():
        try:
            with rasterio.open(confidence_path) as confidence:
                other = (confidence.width, confidence.height, confidence.transform, confidence.crs)
        except rasterio.errors.RasterioIOError:
            raise MsafError(f"{confidence_path}: not a readable raster; rerun `msaf survey`") from None
        if other != grid:
            raise MsafError(
                f"{survey_dir}: confidence.tif ({other[0]}x{other[1]} px) is not on the grid of mask.tif "
                f"({grid[0]}x{grid[1]} px); they come from different runs - rerun `msaf survey`"
            )


def class_names_of(mask_path: Path, record: SurveyRecord | None) -> list[str]:
    """Class names from survey.json, else from the mask's provenance tag, else generic names."""
    if record:
        return list(record.model.classes)
    with open_mask(mask_path) as mask:
        if tag := mask.tags().get("MSAF_CLASSES"):
            return _tagged_classes(mask_path, tag)
        top = 1
        for _, window in mask.block_windows(1):  # block by block: never the whole mask in memory
            values = mask.read(1, window=window)
            values = values[values != NO_CLASS]
            if values.size:
                top = max(top, int(values.max()))
    return ["background", *(f"class_{i}" for i in range(1, top + 1))]


def _tagged_classes(mask_path: Path, tag: str) -> list[str]:
    """The class names of a mask's MSAF_CLASSES tag: a JSON list of names, background first."""
    try:
        names = json.loads(tag)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n for n in names):
        raise MsafError(
            f"{mask_path}: its MSAF_CLASSES tag is not a JSON list of class names ({tag[:60]!r}); write it as "
            'e.g. ["background", "crack"], or remove it to report generic class names'
        )
    return names


def plain_number(value: float, digits: int = 4) -> str:
    """A number for a report's reader to ``digits`` significant digits, never in e-notation (an
    inspector reads ``0.00004752`` m², not ``4.752e-05``, and ``12,346`` m², not ``1.235e+04``)."""
    if not math.isfinite(value) or value == 0 or 1e-3 <= abs(value) < 10.0**digits:
        return f"{value:,.{digits}g}"
    if abs(value) >= 1:
        return f"{value:,.0f}"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))  # the digits after the leading zeros
    return f"{value:.{decimals}f}".rstrip("0")


def table_html(frame: pd.DataFrame) -> str:
    """HTML table; coordinates keep 6 decimals, other numbers 4 significant digits."""
    precise = {c: "{:.6f}".format for c in ("lon", "lat") if c in frame}
    return frame.to_html(index=False, border=0, float_format=plain_number, formatters=precise, na_rep="")


def _provenance(record: SurveyRecord | None, mask_path: Path) -> dict[str, Any]:
    if not record:
        with rasterio.open(mask_path) as mask:
            return {k.removeprefix("MSAF_").lower(): v for k, v in mask.tags().items() if k.startswith("MSAF_")}
    source, model, area = record.input, record.model, record.area_of_interest
    surveyed = (
        {"area of interest": f"{area.path}: {area.area_m2:,.1f} m², {area.raster_share:.1%} of the raster"}
        if area is not None
        else {}
    )
    return {
        "source": source.path,
        "source fingerprint": source.fingerprint,
        "size": f"{source.width} x {source.height} px, {source.crs}",
        **surveyed,
        **({"footprint": record.footprint} if source.footprint is not None else {}),  # older records: unknown
        "ground sample distance": f"{(source.gsd_m or 0) * 1000:.3g} mm",
        "model": f"{model.name} ({model.preset}), sha256 {model.sha256}",
        "tiling": json.dumps(record.tiling.model_dump()),
        "views": _views(record),
        "device": record.device,
        "software": record.software_version,
        "processed (UTC)": record.created_utc,
    }


def _views(record: SurveyRecord) -> str:
    """How each tile was seen and decided: its views (survey.scales), flips, the shadow lift, the
    decision's thresholds."""
    scales = " and ".join(f"{s:g}x" for s in record.scales)
    if record.tiling.views and record.input.gsd_m:
        on_grid = " and ".join(f"{v:g}x" for v in record.tiling.views)
        scales += f" of the model's GSD ({on_grid} of the input's {record.input.gsd_m * 1000:.3g} mm pixels)"
    flips = ", each also mirrored" if record.tta else ""
    if record.thresholds is None:
        return f"{scales}{flips}"
    rule = ", ".join(f"{name} at p >= {t:g}" for name, t in record.thresholds.items()) or "the most probable class"
    lift = f"; tiles darker than luminance {record.exposure_floor:g} lifted to it" if record.exposure_floor else ""
    return f"{scales}{flips}{lift}; decided: {rule}"


def _measurement_notes(tables: DefectTables, cfg: ReportConfig, gsd_mm: float) -> list[tuple[str, str]]:
    """What the GSD can resolve, how widths were measured, and a warning where the CRS distorts scale."""
    notes = []
    if tables.scale_error > STRONG_DISTORTION:
        notes.append(
            (
                "warning",
                f"The mask's CRS distorts scale by up to {tables.scale_error:.1%} at these defects "
                "(e.g. Web Mercator); lengths, widths and areas are corrected to ground units "
                "(geodesic), but deliver orthomosaics in a local projected CRS (UTM) where you can.",
            )
        )
    low, high = cfg.severity.crack_width_mm
    resolved = [f"{t:g} mm: {'yes' if gsd_mm <= t else 'no'}" for t in (low, high)]
    notes.append(
        (
            "note",
            f"GSD {gsd_mm:.3g} mm. A crack-width threshold can be rated from pixels when the GSD "
            f"is at or below it ({', '.join(resolved)}); cracks measured narrower than one pixel "
            'where the lowest threshold cannot be resolved are reported as "below resolution".',
        )
    )
    methods = tables.defects["width_method"].dropna().value_counts().to_dict() if len(tables.defects) else {}
    if methods.get(WIDTH_FROM_MASK):
        notes.append(
            (
                "warning",
                f"{methods[WIDTH_FROM_MASK]} crack width(s) come from the mask, not the image (no "
                "orthomosaic given): masks are wider than cracks, so these widths "
                "and their severities overstate. Re-run `msaf report DIR --image ORTHO.tif`.",
            )
        )
    if methods.get(WIDTH_UPPER_BOUND):
        notes.append(
            (
                "warning",
                f"{methods[WIDTH_UPPER_BOUND]} crack width(s) are upper bounds: the survey has no crack "
                "wide enough to show a crack core's true darkness under this image's blur, so thin "
                "cracks are measured against their own (lighter) darkest level and may be rated too high.",
            )
        )
    if methods.get(WIDTH_UNMEASURED):
        notes.append(
            (
                "warning",
                f"{methods[WIDTH_UNMEASURED]} crack(s) are unmeasured: the image shows them with no "
                'measurable contrast, so they have no width and no rating (severity "unmeasured"); '
                "inspect them on site or in the imagery.",
            )
        )
    return notes


def _by_severity(defects: pd.DataFrame) -> pd.DataFrame:
    """The defects, worst first (by severity, then area)."""
    ranked = defects.assign(rank=defects["severity"].map(SEVERITY_RANK))
    return ranked.sort_values(["rank", "area_m2"], ascending=False)


def _types_caption(axes: StructureAxes | None) -> str:
    """The crack-type table's caption: what the directions are measured against."""
    described = axes.described() if axes is not None else []
    if not described:
        return (
            "Cracks by type (no axis given: straight cracks are 'linear'; give the structure's axis as job "
            "detail axis_deg, or elements, to name them transverse, longitudinal or diagonal)"
        )
    return f"Cracks by type (axes: {'; '.join(described)})"


def build_page(
    tables: DefectTables,
    record: SurveyRecord | None,
    mask_path: Path,
    cfg: ReportConfig,
    ortho: Path | None = None,
    job: dict[str, Any] | None = None,
    condition: ConditionStates | None = None,
    axes: StructureAxes | None = None,
) -> Page:
    """The report page; the picture comes from ``ortho`` (already checked by ``survey_image``), if any.
    ``axes``: the element and structure axes the crack types were read against."""
    defects = tables.defects
    ranked = _by_severity(defects)  # the worst MOST_SEVERE named on the map and in their table, the first chips
    with rasterio.open(mask_path) as mask:
        bounds = tuple(mask.bounds)
        pixel_units = abs(mask.transform.a)
        crs = mask.crs
        centre = ground_pixel_size(mask.crs, mask.transform, mask.width / 2, mask.height / 2)
        metres_per_unit = centre.mean_m / pixel_units  # ground metres: the scale bar is true in Web Mercator too
    classes = sorted(set(defects["class"])) if len(defects) else []
    class_colours = styles.class_colours(classes)
    page = Page(
        title=f"Defect report: {Path(record.input.path if record else mask_path.parent).name}",
        subtitle=f"{len(defects)} defects; total area {plain_number(defects['area_m2'].sum())} m²; "
        f"total crack length {plain_number(defects['length_m'].fillna(0).sum())} m" + _density(defects, condition),
        overview=figures.overview_map(
            ortho,
            bounds,
            defects,
            "severity",
            styles.SEVERITY_COLOURS,
            metres_per_unit,
            "Defects by severity",
            surveyed=survey_footprint(mask_path.parent, crs) if record and record.area_of_interest else None,
            labels=[MapLabel(str(row.defect_id), row.geometry) for row in ranked.head(MOST_SEVERE).itertuples()],
        ),
        has_defects=bool(len(defects)),
        provenance=_provenance(record, mask_path),
        job=job_rows(job if job is not None else record.job if record else {}),
    )
    if record and record.gsd_warning:  # e.g. a 0.5 m/px orthophoto: every length and width below is meaningless
        page.notes.append(
            (
                "warning",
                f"{record.gsd_warning}. Lengths, widths and severities in this report "
                "are not reliable at this ground sample distance.",
            )
        )
    if record and record.tiling.resample_factor != 1.0 and record.tiling.working_gsd_m and record.input.gsd_m:
        factor = record.tiling.resample_factor
        whose = "" if record.tiling.views else " (the working GSD of the model)"  # views: each sees its own GSD
        hint = (
            " Thin cracks are found more often in the input's own pixels: a survey with views 1,2"
            " (--scales 1,2) also reads them as they are."
            if factor < 1 and record.scales == [1.0]
            else ""
        )
        page.notes.append(
            (
                "note",
                f"Inferred on a {record.tiling.working_gsd_m * 1000:.3g} mm grid{whose}: the input's "
                f"{record.input.gsd_m * 1000:.3g} mm pixels were {'enlarged' if factor > 1 else 'reduced'} "
                f"{max(factor, 1 / factor):.2f}x for the model and its answer resampled back onto the input's "
                f"grid; lengths and widths are measured on the input's pixels.{hint}",
            )
        )
    page.notes += _measurement_notes(tables, cfg, centre.mean_m * 1000)
    pieces = defects[defects["crack_id"] > 0]
    if len(pieces) > (linked := pieces["crack_id"].nunique()):
        page.notes.append(
            (
                "note",
                f"{len(pieces)} pieces of crack mask are {linked} cracks: pieces whose ends face each other across "
                f"up to {cfg.link_gap_m * 1000:g} mm are one crack (column crack_id; report.link_gap_m). "
                "Each piece keeps its own row, length and width in the defects layer; the cracks layer of "
                "defects.gpkg lists each crack once, its pieces rolled up.",
            )
        )
    if condition is not None:
        _add_condition(page, condition, cfg, ortho, bounds, metres_per_unit, tables.centerlines)
    if tables.non_defects is not None and len(tables.non_defects):
        context = tables.non_defects.groupby("class").agg(count=("pixels", "size"), area_m2=("area_m2", "sum"))
        page.tables.append(
            ("Not defects (joints and other built lines; not counted or rated)", table_html(context.reset_index()))
        )
    if not len(defects):
        return page
    per_class = (
        defects.groupby("class")
        .agg(
            count=("defect_id", "size"),
            area_m2=("area_m2", "sum"),
            length_m=("length_m", "sum"),
            max_width_mm=("max_width_mm", "max"),
            mean_confidence=("mean_confidence", "mean"),
        )
        .reset_index()
    )
    per_severity = tables.summary[tables.summary["count"] > 0]
    page.tables += [("Per class", table_html(per_class)), ("Per class and severity", table_html(per_severity))]
    columns = [
        "defect_id",
        "class",
        "severity",
        "area_m2",
        "length_m",
        "mean_width_mm",
        "max_width_mm",
        "crack_type",
        "mean_confidence",
        "lon",
        "lat",
    ]
    if (defects["element"] != "").any():
        columns.insert(3, "element")
    page.tables.append(
        ("Most severe defects (their ids are on the map)", table_html(ranked[columns].head(MOST_SEVERE)))
    )
    if class_colours and len(class_colours) > 1:
        page.figures.append(
            (
                "defects by class",
                figures.overview_map(
                    ortho, bounds, defects, "class", class_colours, metres_per_unit, "Defects by class"
                ),
            )
        )
    cracks = defects[defects["class"].isin(cfg.crack_classes)]
    if len(cracks):
        page.tables.append((_types_caption(axes), table_html(types_table(cracks))))
        outlines = [MapLabel(n, g) for n, g in zip(axes.names, axes.geometries, strict=True)] if axes else []
        page.figures.append(
            (
                "cracks by type",
                figures.overview_map(
                    ortho,
                    bounds,
                    cracks,
                    "crack_type",
                    {t: c for t, c in styles.CRACK_TYPE_COLOURS.items() if (cracks["crack_type"] == t).any()},
                    metres_per_unit,
                    "Cracks by type",
                    outlines=outlines,
                ),
            )
        )
    unmeasured = cracks[cracks["severity"] == UNMEASURED]
    if len(unmeasured):
        page.tables.append(
            (
                "Unmeasured cracks (no contrast in the image: no width, no rating)",
                table_html(unmeasured[["defect_id", "class", "length_m", "mean_confidence", "lon", "lat"]].head(25)),
            )
        )
    widths = cracks["mean_width_mm"].dropna().to_numpy()
    if len(widths):
        page.figures.append(
            ("crack width histogram", figures.histogram(widths, "mean crack width (mm)", "Crack widths"))
        )
    if len(cracks):
        lengths = [float(cracks.loc[cracks["severity"] == s, "length_m"].sum()) for s in SEVERITIES]
        page.figures.append(
            (
                "crack length by severity",
                figures.bars(
                    list(SEVERITIES),
                    lengths,
                    "crack length (m)",
                    "Crack length by severity",
                    [styles.SEVERITY_COLOURS[s] for s in SEVERITIES],
                ),
            )
        )
    margin = 32 * pixel_units  # context around each chip
    for _, row in ranked.head(cfg.chips).iterrows():
        png = figures.chip(
            ortho,
            row.geometry,
            margin,
            f"#{row.defect_id} {row['class']} ({row.severity})",
            styles.SEVERITY_COLOURS[row.severity],
        )
        if png:
            detail = f"{plain_number(row.area_m2, 3)} m²"
            if not np.isnan(row.length_m):
                detail += f", {plain_number(row.length_m, 3)} m long, max {row.max_width_mm:.2g} mm wide"
            page.chips.append((int(row.defect_id), png, f"#{row.defect_id} {row['class']}, {row.severity}: {detail}"))
    return page


def _density(defects: pd.DataFrame, condition: ConditionStates | None) -> str:
    """The surveyed ground and its crack density (crack metres per square metre), for the subtitle."""
    if condition is None or not (surveyed := float(condition.states["area_m2"].sum())):
        return ""
    length = float(defects["length_m"].fillna(0).sum()) if len(defects) else 0.0
    return f" over {plain_number(surveyed)} m² surveyed ({plain_number(length / surveyed, 3)} m/m²)"


def _add_condition(
    page: Page,
    condition: ConditionStates,
    cfg: ReportConfig,
    ortho: Path | None,
    bounds: tuple[float, float, float, float],
    metres_per_unit: float,
    centerlines: gpd.GeoDataFrame | None = None,
) -> None:
    """The element quantities by condition state (cracking), how they were made, and their map."""
    spec = cfg.condition
    heavy, insignificant = spec.crack_spacing_m
    low, high = cfg.severity.crack_width_mm
    page.tables.append(
        ("Condition states of the surveyed area (cracking, AASHTO MBEI defect 1130)", table_html(condition.states))
    )
    if condition.by_element is not None:
        page.tables.append(("Condition states per element", table_html(condition.by_element)))
        unsurveyed = sorted(set(condition.by_element.loc[condition.by_element["surveyed_m2"] <= 0, "element"]))
        if unsurveyed:
            page.notes.append(
                (
                    "warning",
                    f"Element(s) with no surveyed ground (outside the flight or the area of interest): "
                    f"{', '.join(unsurveyed)}.",
                )
            )
    page.notes.append(
        (
            "note",
            f"Condition states: the surveyed ground in {spec.cell_m:g} m cells, each in the worse state of its "
            f"widest crack (< {low:g} mm insignificant, {low:g}-{high:g} mm moderate, > {high:g} mm wide) and "
            f"its crack spacing (ground / crack length over {spec.spacing_window_m:g} m around it: > "
            f"{insignificant:g} m insignificant, {heavy:g}-{insignificant:g} m moderate, < {heavy:g} m heavy "
            "pattern cracking). A range (e.g. CS1-CS2) is a width this GSD cannot rate. Cracks are taken as "
            "unsealed; CS4 (structural review) and other defects (spalls, efflorescence) are the inspector's "
            "to add. The quantities are as complete as the crack map: ground under a crack the model missed "
            "stays CS1, so review the map (layer condition_cells in defects.gpkg).",
        )
    )
    page.notes.extend(_image_notes(condition, spec))
    flagged = condition.cells[condition.cells["condition_state"] != "CS1"]
    if len(flagged):  # CS1 cells are left clear: the orthomosaic shows through them
        colours = {s: c for s, c in styles.CONDITION_COLOURS.items() if s != "CS1"}
        page.figures.append(
            (
                "condition states",
                figures.overview_map(
                    ortho,
                    bounds,
                    flagged,
                    "condition_state",
                    colours,
                    metres_per_unit,
                    "Condition states (cracking; CS1 left clear)",
                    lines=centerlines.geometry if centerlines is not None else None,
                ),
            )
        )


def _image_notes(condition: ConditionStates, spec: ConditionConfig) -> list[tuple[str, str]]:
    """What the orthomosaic leaves unrated: ground too dark, too clipped or too blurred to show a
    crack; and how sharp the rest is (the thinnest cracks go first as blur grows)."""
    if set(condition.area_by_exposure) == {NOT_CHECKED}:
        return [
            (
                "note",
                "Exposure and sharpness not checked (no orthomosaic): a shadow, glare or blur that hid "
                "cracks is rated CS1.",
            )
        ]
    notes = []
    blur_px, blur_mm = condition.median_blur("px"), condition.median_blur("mm")
    if not math.isnan(blur_px):
        notes.append(
            (
                "note",
                f"Image sharpness: the orthomosaic's blur over the surveyed ground is {blur_px:.2f} px "
                f"({blur_mm:.2g} mm; median, step-edge sigma), read cell by cell (condition_cells, columns "
                f"sharpness and blur_px). Thin cracks go first as blur grows: over {spec.max_blur_px:g} px the "
                "model finds under a third of the 1-2 px cracks it finds in a sharp image.",
            )
        )
    plain = condition.too_plain_m2
    if plain > 0:
        notes.append(
            (
                "note",
                f"{plain_number(plain, 3)} m² show too little texture to read their blur (a plain surface, or one "
                "defocused beyond reading): their state is not widened for blur; look at them in the orthomosaic.",
            )
        )
    unrated = condition.unrated_m2
    if not unrated:
        return notes
    dark, bright = unrated.get(TOO_DARK, 0.0), unrated.get(OVEREXPOSED, 0.0)
    blurred = unrated.get(TOO_BLURRED, 0.0)
    parts = [f"{plain_number(dark, 3)} m² too dark (mean luminance < {spec.min_luminance:g} of 255)"] if dark else []
    parts += (
        [f"{plain_number(bright, 3)} m² overexposed (over {spec.max_clipped_share:.0%} of pixels clipped)"]
        if bright
        else []
    )
    parts += [f"{plain_number(blurred, 3)} m² too blurred (blur over {spec.max_blur_px:g} px)"] if blurred else []
    columns = " and ".join(column for column, area in (("exposure", dark + bright), ("sharpness", blurred)) if area)
    return [
        *notes,
        (
            "warning",
            f"{' and '.join(parts)} of the surveyed ground cannot show a crack: those cells are rated as a "
            f"range up to CS3 (condition_cells, column {columns}). Re-fly them lit, exposed and in focus.",
        ),
    ]


def _elements_on(mask_path: Path, source: ElementsConfig) -> Elements:
    """The element polygons in the mask's CRS."""
    with open_mask(mask_path) as mask:
        crs = mask.crs
    return read_elements(source, crs)


def _check_unchanged(ortho: Path, record: SurveyRecord) -> None:
    """Widths are read from the pixels the survey saw, or not at all: an orthomosaic replaced
    after its survey (same grid, another picture) would give every crack another width."""
    if record.input.kind == "file" and not fingerprint.matches(ortho, record.input.fingerprint):
        raise MsafError(
            f"{ortho} has changed since it was surveyed (its bytes differ from survey.json's fingerprint); "
            "re-run the survey, or pass --image PATH to read widths from it anyway"
        )


def survey_image(record: SurveyRecord | None, image: Path | None) -> Path | None:
    """The orthomosaic crack widths and pictures come from: the one given, else the survey's input if still there.

    Both pass the survey's input policy (``pipeline.raster.trust``): a report never reads a file a
    survey would refuse (its own VRT input only if it was one), and never the network.
    """
    if image is not None:
        location = locate(image, allow_vrt=True)
        try:
            with rasterio.open(location.text, driver=driver_for(location.text, "vrt")) as ds:
                orthomosaic_bands(ds, location.text)
        except RasterioIOError:
            raise MsafError(f"{image}: not a readable raster; pass the orthomosaic that was surveyed") from None
        return Path(location.text)
    source = record.input.path if record else None
    if not source or is_virtual(source):
        return None
    try:
        location = locate(source, allow_vrt=record is not None and record.input.kind == "vrt")
    except MsafError:
        return None
    return Path(location.text)


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def report_survey(
    survey_dir: str | Path,
    cfg: ReportConfig,
    image: Path | None = None,
    job: dict[str, str] | None = None,
    elements: ElementsConfig | None = None,
) -> ReportResult:
    """Write defects.gpkg/.geojson/.csv/.parquet/.dxf and report.html into ``survey_dir``; returns what it found.

    Crack widths are read from ``image`` (or the survey's input orthomosaic when it is still in
    place); without either they come from the mask, and the report says so. ``job`` adds to (and
    overrides) the job details the survey recorded, for this report and its GeoPackage.
    ``elements`` (else ``cfg.elements``): the structure's element polygons, whose condition-state
    quantities are added.
    """
    survey_dir = Path(survey_dir)
    if not survey_dir.is_dir():
        raise MsafError(f"survey folder not found: {survey_dir}")
    with exclusive(survey_dir):
        try:
            return _report(survey_dir, cfg, image, job or {}, elements or cfg.elements)
        except Exception as exc:
            if is_disk_full(exc):
                raise disk_error(exc, survey_dir) from None
            raise


def _report(
    survey_dir: Path, cfg: ReportConfig, image: Path | None, job: dict[str, str], elements: ElementsConfig | None
) -> ReportResult:
    folder = SurveyFolder(survey_dir)
    mask_path = folder.mask
    record = read_survey_record(survey_dir)
    job = (record.job if record else {}) | job
    check_same_run(survey_dir, record)
    class_names = class_names_of(mask_path, record)
    ortho = survey_image(record, image)
    refuse_overwriting([ortho] if ortho else [], survey_dir, REPORT_OUTPUTS, "report")
    if image is None and ortho is not None and record is not None:
        _check_unchanged(ortho, record)
    refuse_losing_review(folder.gpkg)
    structure = _elements_on(mask_path, elements) if elements else None  # a mistake is one line before any work
    axes = StructureAxes.of(structure, job_axis(job))
    tables = build_defects(mask_path, folder.confidence, class_names, cfg, ortho, axes)
    condition = assess_condition(mask_path, tables.centerlines, cfg.condition, cfg.severity, ortho)
    if structure is not None:
        condition = replace(condition, by_element=quantities_by_element(condition.cells, structure))
    with rasterio.open(mask_path) as mask:
        pixel_size = abs(mask.transform.a)
    # the GIS files and the drawing are written in a worker while the page's maps are drawn here
    # (with auto from MIN_FOR_PROCESSES defects, in the pool that measured them)
    workers = processes_for(cfg.workers, len(tables.defects), MIN_FOR_PROCESSES)
    files = Aside(write_files, (survey_dir, tables, _gpkg_metadata(record, job), condition, pixel_size, job), workers)
    try:
        page = build_page(tables, record, mask_path, cfg, ortho, job, condition, axes)
    except BaseException:
        files.wait()  # a Ctrl-C or an error here: the files finish (or fail) in their worker first
        raise
    outputs = files.result()
    with atomic_output(folder.html) as tmp:
        tmp.write_text(page.render())
    counts = tables.defects.groupby("class").size().to_dict() if len(tables.defects) else {}
    context = (
        tables.non_defects.groupby("class").size().to_dict()
        if tables.non_defects is not None and len(tables.non_defects)
        else {}
    )
    return ReportResult(
        defects=len(tables.defects),
        by_class={k: int(v) for k, v in counts.items()},
        cracks_by_type=cracks_by_type(tables.defects),
        non_defects={k: int(v) for k, v in context.items()},
        condition_m2=condition.area_by_state,
        unrated_m2=condition.unrated_m2,
        blur_px=_or_none(condition.median_blur("px")),
        blur_mm=_or_none(condition.median_blur("mm")),
        outputs=outputs | {"html": SurveyFolder.HTML},
    )
