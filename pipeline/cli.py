"""The `msaf` command line: thin wrappers that turn MsafError into one clear line and exit 2."""

from __future__ import annotations

import functools
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.table import Table

import pipeline
from pipeline.errors import MsafError

if TYPE_CHECKING:
    from pipeline.config import Params

app = typer.Typer(add_completion=False, no_args_is_help=True, help="MSAF bridge-defect segmentation pipeline.")
console = Console(soft_wrap=True)
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_PARAMS = Path("params.yaml")


def user_errors(func: F) -> F:
    """Print expected mistakes as one line on stderr (no traceback) and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MsafError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]: no output was finalised")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _parse_sets(sets: list[str]) -> dict[str, Any]:
    """``--set train.lr=0.01`` -> {"train.lr": 0.01}; values are parsed as YAML scalars."""
    parsed = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MsafError(f"--set expects KEY=VALUE (e.g. train.epochs=3), got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_metrics(summary: dict[str, Any]) -> None:
    """Per-class metrics as a table."""
    table = Table(title=f"{summary.get('images', '?')} images, F1 tolerance {summary['tolerance_px']} px")
    for column in ("class", "IoU", "precision", "recall", "F1", "tol F1", "pixels"):
        table.add_column(column, justify="right" if column != "class" else "left")
    for name, m in summary["classes"].items():
        table.add_row(name, *(_fmt(m.get(k, "")) for k in ("iou", "precision", "recall", "f1", "tol_f1", "support")))
    console.print(table)
    console.print(f"mIoU {summary['miou']:.4f}  foreground IoU {summary['fg_iou']:.4f}  "
                  f"F1 {summary['fg_f1']:.4f}  tolerant F1 {summary['fg_tol_f1']:.4f}")


@app.command()
@user_errors
def train(
    params: Annotated[Path, typer.Option(help="params.yaml to read")] = DEFAULT_PARAMS,
    out: Annotated[Path | None, typer.Option(help="checkpoint path (default: train.out)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a param, e.g. train.epochs=3")] = [],  # noqa: B006
) -> None:
    """Train a model from params.yaml and write a safetensors checkpoint."""
    from pipeline.config import load_params
    from pipeline.training.trainer import train_model

    cfg = load_params(params, _parse_sets(set_))
    console.print(f"training [bold]{cfg.model.preset}[/] on {cfg.data.images} for {cfg.train.epochs} epochs")

    def report(r: dict[str, Any]) -> None:
        console.print(f"epoch {r['epoch']:3d}/{cfg.train.epochs}  loss {r['loss']:.4f}  lr {r['lr']:.2e}  "
                      f"val IoU {r['val_fg_iou']:.4f}  F1 {r['val_fg_f1']:.4f}  tol-F1 {r['val_fg_tol_f1']:.4f}  "
                      f"({r['seconds']:.1f} s)")

    result = train_model(cfg, out=out, on_epoch=report)
    best = result.metadata.metrics["val"]
    console.print(f"wrote {result.checkpoint} (sha256 {result.sha256[:12]}, best epoch {best['epoch']}, "
                  f"val tolerant F1 {best['fg_tol_f1']:.4f})")


@app.command()
@user_errors
def evaluate(
    model: Annotated[Path, typer.Option(help="checkpoint (.safetensors)")],
    images: Annotated[Path, typer.Option(help="folder of images")],
    masks: Annotated[Path, typer.Option(help="folder of masks, same file stems")],
    out: Annotated[Path, typer.Option(help="metrics JSON to write")] = Path("metrics.json"),
    tolerance: Annotated[float, typer.Option(help="tolerance (px) for the thin-structure F1")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Score a model on labelled images; print a table and write metrics JSON."""
    from pipeline.evaluate import evaluate_folder
    from pipeline.fsutil import write_json

    summary = evaluate_folder(model, images, masks, device=device, tolerance_px=tolerance)
    print_metrics(summary)
    write_json(out, summary)
    console.print(f"wrote {out}")


def _load_optional_params(path: Path) -> Params:
    """params.yaml when present (explicit path must exist), else the built-in defaults."""
    from pipeline.config import Params, load_params

    if path.exists() or path != DEFAULT_PARAMS:
        return load_params(path)
    return Params().resolve_paths(Path.cwd())


def _parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height or width)
    except ValueError:
        raise MsafError(f"--size expects W or WxH in pixels (e.g. 8192 or 8192x6000), got {text!r}") from None


@app.command()
@user_errors
def survey(
    ortho: Annotated[Path, typer.Argument(help="orthomosaic (GeoTIFF/COG, RGB or RGBA)")],
    out: Annotated[Path, typer.Option(help="output folder (mask.tif, confidence.tif, survey.json)")],
    model: Annotated[Path | None, typer.Option(help="checkpoint (default: survey.model in params.yaml)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    tile: Annotated[int | None, typer.Option(help="tile side (default: the model's training tile)")] = None,
    overlap: Annotated[int | None, typer.Option(help="tile overlap in px (default: tile // 4)")] = None,
    block: Annotated[int | None, typer.Option(help="block core size in px")] = None,
    batch: Annotated[int | None, typer.Option(help="tiles per forward pass")] = None,
    workers: Annotated[int | None, typer.Option(help="blocks inferred concurrently")] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="flip test-time augmentation")] = None,
    with_report: Annotated[bool, typer.Option("--report/--no-report", help="write the defect report too")] = True,
    assume_crs: Annotated[str | None, typer.Option(help="CRS for a raster that has none, e.g. EPSG:32633")] = None,
    params: Annotated[Path, typer.Option(help="params.yaml (survey section)")] = DEFAULT_PARAMS,
) -> None:
    """Segment an orthomosaic into a georeferenced defect mask (COG) + confidence + survey.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.report.build import report_survey
    from pipeline.survey import run_survey

    all_params = _load_optional_params(params)
    cfg = all_params.survey
    flags = {"device": device, "tile": tile, "overlap": overlap, "block": block, "batch": batch,
             "workers": workers, "tta": tta}
    cfg = cfg.model_validate(cfg.model_dump() | {k: v for k, v in flags.items() if v is not None})
    columns = (TextColumn("blocks"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("survey", total=None)
        record = run_survey(ortho, out, cfg, model_path=model, assume_crs=assume_crs,
                            on_block=lambda done, total: progress.update(task, completed=done, total=total))
    pixels = ", ".join(f"{name} {count:,}" for name, count in record["class_pixels"].items())
    console.print(f"{record['input']['width']}x{record['input']['height']} px in {record['timings']['total_s']:.1f} s "
                  f"({record['throughput_mpix_s']['end_to_end']:.2f} Mpix/s, peak RSS {record['peak_rss_mb']:.0f} MiB)")
    console.print(f"class pixels: {pixels}")
    console.print(f"wrote {out / 'mask.tif'}, {out / 'confidence.tif'}, {out / 'survey.json'}")
    if with_report:
        _print_report_summary(out, report_survey(out, all_params.report))


@app.command()
@user_errors
def mosaic(
    images: Annotated[Path, typer.Option(help="folder of labelled photos")],
    masks: Annotated[Path, typer.Option(help="folder of their masks")],
    out: Annotated[Path, typer.Option(help="orthomosaic GeoTIFF to write")],
    truth: Annotated[Path, typer.Option(help="ground-truth class raster to write")],
    size: Annotated[str, typer.Option(help="W or WxH in pixels")] = "8192",
    gsd: Annotated[float, typer.Option(help="ground sample distance, metres per pixel")] = 0.001,
    crs: Annotated[str, typer.Option(help="projected CRS, e.g. EPSG:32633")] = "EPSG:32633",
    compress: Annotated[str, typer.Option(help="jpeg or deflate")] = "jpeg",
    footprint: Annotated[bool, typer.Option(help="irregular nodata footprint (alpha or internal mask)")] = False,
    seed: Annotated[int, typer.Option(help="random seed of the layout")] = 0,
    params: Annotated[Path, typer.Option(help="params.yaml (data.classes maps mask values)")] = DEFAULT_PARAMS,
) -> None:
    """Compose a large georeferenced survey orthomosaic from crack photos, with exact ground truth."""
    from pipeline.raster.mosaic import compose_mosaic

    if compress not in ("jpeg", "deflate"):
        raise MsafError(f"--compress must be jpeg or deflate, got {compress!r}")
    width, height = _parse_size(size)
    classes = _load_optional_params(params).data.classes
    summary = compose_mosaic(images, masks, out, truth, width, height, gsd, crs, classes,
                             compress=compress, footprint=footprint, seed=seed)  # type: ignore[arg-type]
    console.print(f"wrote {out} and {truth}: {width}x{height} px at {gsd * 1000:g} mm/px ({summary['crs']}), "
                  f"footprint {summary['footprint_fraction']:.0%}, defects {summary['defect_fraction']:.2%}")


@app.command()
@user_errors
def report(
    survey_dir: Annotated[Path, typer.Argument(help="survey folder (mask.tif, confidence.tif, survey.json)")],
    params: Annotated[Path, typer.Option(help="params.yaml (report section)")] = DEFAULT_PARAMS,
) -> None:
    """Vectorise and measure defects; write defects.gpkg/.geojson/.csv/.parquet and report.html."""
    from pipeline.report.build import report_survey

    summary = report_survey(survey_dir, _load_optional_params(params).report)
    _print_report_summary(survey_dir, summary)


@app.command()
@user_errors
def compare(
    old_survey: Annotated[Path, typer.Argument(help="earlier survey folder")],
    new_survey: Annotated[Path, typer.Argument(help="later survey folder")],
    out: Annotated[Path, typer.Option(help="folder for changes.gpkg/.geojson/.csv and report.html")],
    params: Annotated[Path, typer.Option(help="params.yaml (report section)")] = DEFAULT_PARAMS,
) -> None:
    """Match the defects of two surveys and classify each as new, grown, unchanged, shrunk or not found."""
    from pipeline.report.compare import compare_surveys

    result = compare_surveys(old_survey, new_survey, out, _load_optional_params(params).report)
    console.print(", ".join(f"{count} {status}" for status, count in result["changes"].items()))
    console.print(f"wrote {', '.join(str(out / f) for f in result['outputs'])}")


def _print_report_summary(survey_dir: Path, summary: dict[str, Any]) -> None:
    if summary["defects"]:
        by_class = ", ".join(f"{name} {count}" for name, count in summary["by_class"].items())
        console.print(f"{summary['defects']} defects ({by_class})")
    else:
        console.print("no defects found")
    console.print(f"wrote {', '.join(str(survey_dir / f) for f in summary['outputs'].values())}")


@app.command()
def doctor() -> None:
    """Print versions and hardware, to paste into bug reports."""
    import numpy
    import rasterio
    import torch

    rows = {
        "msaf-pipeline": pipeline.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available",
        "cpu threads": str(torch.get_num_threads()),
        "numpy": numpy.__version__,
        "rasterio / GDAL": f"{rasterio.__version__} / {rasterio.__gdal_version__}",
    }
    for key, value in rows.items():
        console.print(f"{key:>16}: {value}")


def main() -> None:
    """Console-script entry point."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    # a missing georeference is reported as a clear error (or handled with --assume-crs), not a warning
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    app()


if __name__ == "__main__":
    sys.exit(main())
