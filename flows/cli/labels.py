"""`msaf labels ...`: training labels on an orthomosaic's grid, from vector files or a reviewed survey."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.app import PARAMS_HELP, console, load_optional_params, user_errors

if TYPE_CHECKING:
    from pipeline.labels.labelset import LabelSetRecord

labels_app = typer.Typer(
    no_args_is_help=True, help="Training labels on an orthomosaic's grid (label sets for `data.sets` of kind geo)."
)


def _summary(record: LabelSetRecord, out: Path) -> None:
    labelled = {name: count for name, count in record.pixels.items() if name != "ignored"}
    total = sum(record.pixels.values())
    console.print(
        f"wrote {out}/labels.tif ({record.width}x{record.height} px) and labelset.json: "
        + ", ".join(f"{name} {count:,} px" for name, count in labelled.items())
        + f"; ignored {record.pixels['ignored'] / max(total, 1):.1%}"
    )


@labels_app.command("rasterize")
@user_errors
def labels_rasterize(
    image: Annotated[Path, typer.Argument(help="the orthomosaic the labels belong to (GeoTIFF/COG)")],
    labels: Annotated[Path, typer.Argument(help="vector labels in any CRS and OGR format (GPKG, GeoJSON, SHP...)")],
    out: Annotated[Path, typer.Option(help="label set folder to write (labels.tif + labelset.json)")],
    layer: Annotated[str | None, typer.Option(help="layer of LABELS (default: its first)")] = None,
    class_field: Annotated[str, typer.Option(help="field naming each feature's class")] = "class",
    width_field: Annotated[str, typer.Option(help="field with a crack line's width in mm (else 1 px)")] = "width_mm",
    aoi: Annotated[Path | None, typer.Option(help="polygons where the labels are complete (else: everywhere)")] = None,
    aoi_layer: Annotated[str | None, typer.Option(help="layer of --aoi")] = None,
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
) -> None:
    """Rasterise vector labels onto the orthomosaic's grid: cracks and joints as lines, area defects as polygons."""
    from pipeline.labels.rasterize import rasterize_labels

    settings = load_optional_params(params)
    record = rasterize_labels(
        image,
        labels,
        out,
        settings.data.class_names,
        settings.report.non_defect_classes,
        layer=layer,
        class_field=class_field,
        width_field=width_field,
        aoi=aoi,
        aoi_layer=aoi_layer,
    )
    _summary(record, out)


@labels_app.command("from-survey")
@user_errors
def labels_from_survey(
    survey_dir: Annotated[Path, typer.Argument(help="a survey folder whose defects.gpkg an inspector reviewed")],
    out: Annotated[Path, typer.Option(help="label set folder to write (labels.tif + labelset.json)")],
    margin: Annotated[
        float, typer.Option(help="without a reviewed_area: px around reviewed items taken as looked at")
    ] = 32,
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
) -> None:
    """Turn a reviewed survey into a label set: confirmed defects, false alarms as background, drawn missed cracks."""
    from pipeline.labels.from_survey import labels_from_survey as build

    record = build(survey_dir, out, load_optional_params(params).report, margin_px=margin)
    _summary(record, out)
