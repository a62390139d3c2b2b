"""The `msaf` command line: thin wrappers that turn MsafError into one clear line and exit 2.

It lives with the orchestration (it starts flows), so the `pipeline` library never imports `flows`.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
import yaml
from rich.console import Console
from rich.table import Table

import pipeline
from pipeline.errors import MsafError

if TYPE_CHECKING:
    from pipeline.config import Params
    from pipeline.metrics.summary import EvaluationSummary, MetricsSummary

app = typer.Typer(add_completion=False, no_args_is_help=True, help="MSAF bridge-defect segmentation pipeline.")
console = Console(soft_wrap=True)
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
MetaOption = Annotated[
    list[str],
    typer.Option("--meta", help="job detail KEY=VALUE (structure_id, element, inspector, flight_date, notes, ...)"),
]
MetaFileOption = Annotated[Path | None, typer.Option(help="job details as YAML (KEY: VALUE)")]
PARAMS_HELP = "settings file (default: MSAF_PARAMS, else the project's params.yaml, else built-in defaults)"


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


METRIC_COLUMNS = ("iou", "precision", "recall", "f1", "tol_f1")


def print_metrics(summary: EvaluationSummary) -> None:
    """Per-class metrics as a table, one block of rows per data set when there are several."""
    groups: dict[str, MetricsSummary] = dict(summary.sets) or {"all": summary}
    table = Table(
        title=f"{summary.images} images, F1 tolerance {summary.tolerance_px} px"
        + (f", thresholds {summary.thresholds}" if summary.thresholds else "")
    )
    for column in ("set", "class", "IoU", "precision", "recall", "F1", "tol F1", "width px (pred/true)", "pixels"):
        table.add_column(column, justify="left" if column in ("set", "class") else "right")
    for group, part in groups.items():
        for name, m in part.classes.items():
            width = (
                f"{m.median_width_px:.2f} / {m.median_true_width_px or float('nan'):.2f}"
                if m.median_width_px is not None
                else ""
            )
            values = m.model_dump()
            table.add_row(
                group,
                name,
                *(_fmt(values[k] if values[k] is not None else "") for k in METRIC_COLUMNS),
                width,
                _fmt(m.support),
            )
    console.print(table)
    console.print(
        f"mIoU {summary.miou:.4f}  foreground IoU {summary.fg_iou:.4f}  F1 {summary.fg_f1:.4f}  "
        f"tolerant F1 {summary.fg_tol_f1:.4f}  score (mean over sets) {summary.score:.4f}"
    )


@app.command()
@user_errors
def prepare(
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
    out: Annotated[Path, typer.Option(help="manifest to write")] = Path("data/prepared/manifest.json"),
) -> None:
    """Validate the labelled data and write the deterministic train/val manifest (DVC stage 'prepare')."""
    from pipeline.config import load_params
    from pipeline.data.manifest import build_manifest, save_manifest

    manifest = build_manifest(load_params(_required_params(params)).data)
    save_manifest(manifest, out)
    for entry in manifest.sets:
        console.print(
            f"{entry.name}: {len(entry.train)} train + {len(entry.val)} val images, "
            f"fingerprint {entry.fingerprint[:12]}"
        )
    console.print(f"wrote {out}")


@app.command()
@user_errors
def train(
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help="checkpoint path (default: train.out)")] = None,
    manifest: Annotated[Path | None, typer.Option(help="prepared manifest (default: split from params)")] = None,
    history: Annotated[Path | None, typer.Option(help="per-epoch metrics CSV to write (for dvc plots)")] = None,
    run_info: Annotated[Path | None, typer.Option(help="JSON with the MLflow run id and model URI")] = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="log the run to MLflow")] = True,
    set_: Annotated[list[str], typer.Option("--set", help="override a param, e.g. train.epochs=3")] = [],  # noqa: B006
) -> None:
    """Train a model from params.yaml and write a safetensors checkpoint (logged to MLflow)."""
    from pipeline.config import load_params
    from pipeline.data.manifest import load_manifest
    from pipeline.training.trainer import TIMINGS, load_training_data, train_model

    cfg = load_params(_required_params(params), _parse_sets(set_))
    data = load_training_data(cfg, load_manifest(manifest) if manifest else None)  # data mistakes: before any run
    console.print(
        f"training [bold]{cfg.model.preset}[/] on {', '.join(s.name for s in data.manifest.sets)} "
        f"for {cfg.train.epochs} epochs"
    )

    def report(r: dict[str, Any]) -> None:
        per_set = "  ".join(f"{k[4:-6]} {v:.4f}" for k, v in r.items() if k.endswith("_score") and k != "val_score")
        limits = "  ".join(f"t({k[10:]}) {v:.2f}" for k, v in r.items() if k.startswith("threshold_"))
        console.print(
            f"epoch {r['epoch']:3d}/{cfg.train.epochs}  loss {r['loss']:.4f}  lr {r['lr']:.2e}  "
            f"val IoU {r['val_fg_iou']:.4f}  F1 {r['val_fg_f1']:.4f}  tol-F1 {r['val_fg_tol_f1']:.4f}  "
            f"({per_set}) {limits} score {r['val_score']:.4f} ({r['seconds']:.1f} s)"
        )

    def run(on_epoch: Callable[[dict[str, Any]], None] = lambda r: None) -> Any:
        def each_epoch(record: dict[str, Any]) -> None:
            report(record)
            on_epoch(record)

        return train_model(cfg, out=out, data=data, on_epoch=each_epoch)

    run_id = model_uri = None
    if track:
        from pipeline.tracking.runs import tracked_training
        from pipeline.tracking.store import init_tracking

        init_tracking()
        result, run_id, model_uri = tracked_training(cfg.model_dump(mode="json"), run)
    else:
        result = run()
    best = result.validation
    if history:
        import pandas as pd

        from pipeline.fsutil import atomic_output

        with atomic_output(history) as tmp:
            pd.DataFrame(result.history).drop(columns=list(TIMINGS)).to_csv(tmp, index=False)
    if run_info:
        from pipeline.fsutil import write_json

        write_json(
            run_info,
            {
                "run_id": run_id,
                "model_uri": model_uri,
                "checkpoint": str(result.checkpoint),
                "sha256": result.sha256,
                "weights_sha256": result.metadata.weights_sha256,
            },
        )
    console.print(
        f"wrote {result.checkpoint} (sha256 {result.sha256[:12]}, best epoch {best.epoch}, "
        f"val score {best.score:.4f}, thresholds {best.thresholds})" + (f"; MLflow run {run_id}" if run_id else "")
    )


@app.command()
@user_errors
def evaluate(
    model: Annotated[Path, typer.Option(help="checkpoint (.safetensors)")],
    images: Annotated[Path | None, typer.Option(help="folder of images")] = None,
    masks: Annotated[Path | None, typer.Option(help="folder of masks, same file stems")] = None,
    manifest: Annotated[Path | None, typer.Option(help="prepared manifest instead of --images/--masks")] = None,
    split: Annotated[str, typer.Option(help="manifest split: val, train or all")] = "val",
    out: Annotated[Path, typer.Option(help="metrics JSON to write")] = Path("metrics.json"),
    per_class: Annotated[Path | None, typer.Option(help="per-class metrics CSV (for dvc plots)")] = None,
    tolerance: Annotated[float, typer.Option(help="tolerance (px) for the thin-structure F1")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Score a model on labelled images; print a table and write metrics JSON."""
    from pipeline.evaluate import evaluate_folder

    if manifest is not None:
        from pipeline.data.manifest import load_manifest

        if split not in ("val", "train", "all"):
            raise MsafError(f"--split must be val, train or all, got {split!r}")
        from pipeline.evaluate import evaluate_sets

        summary = evaluate_sets(model, load_manifest(manifest).load(split), device=device, tolerance_px=tolerance)
    elif images is not None and masks is not None:
        summary = evaluate_folder(model, images, masks, device=device, tolerance_px=tolerance)
    else:
        raise MsafError("give --images and --masks, or --manifest")
    print_metrics(summary)
    summary.write(out)
    if per_class:
        _write_per_class(per_class, summary)
    console.print(f"wrote {out}")


def _write_per_class(path: Path, summary: EvaluationSummary) -> None:
    """One row per data set (and "all") and class: IoU, precision, recall, F1, tolerant F1."""
    import pandas as pd

    from pipeline.fsutil import atomic_output

    groups: dict[str, MetricsSummary] = {"all": summary, **summary.sets}
    rows = [
        {"set": group, "class": name, **m.model_dump(include=set(METRIC_COLUMNS))}
        for group, part in groups.items()
        for name, m in part.classes.items()
    ]
    with atomic_output(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _required_params(explicit: Path | None) -> Path:
    """The settings file a data/training command needs (it has no meaningful built-in data sets)."""
    from pipeline.locations import params_path

    path, _ = params_path(explicit)
    if path is None:
        raise MsafError("no params.yaml: run this in the project folder, or pass --params FILE (or set MSAF_PARAMS)")
    return path


def _load_optional_params(explicit: Path | None, survey_overrides: dict[str, Any] | None = None) -> Params:
    """Settings by the documented precedence (``pipeline.locations``); a named file must exist."""
    from pipeline.config import load_params_or_defaults
    from pipeline.locations import params_path

    path, source = params_path(explicit)
    return load_params_or_defaults(path, survey_overrides, required=source != "project folder")


def _params_for_flow(explicit: Path | None) -> str | None:
    from pipeline.locations import params_path

    path, _ = params_path(explicit)
    return str(path.resolve()) if path else None


def _parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height or width)
    except ValueError:
        raise MsafError(f"--size expects W or WxH in pixels (e.g. 8192 or 8192x6000), got {text!r}") from None


@app.command()
@user_errors
def survey(
    ortho: Annotated[str, typer.Argument(help="orthomosaic (GeoTIFF/COG, RGB or RGBA); a URL with --allow-remote")],
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
    track: Annotated[bool, typer.Option("--track/--no-track", help="log the survey to MLflow")] = True,
    engine: Annotated[str, typer.Option(help="local (threads) or dask (a Dask cluster)")] = "local",
    dask_address: Annotated[str | None, typer.Option(help="existing scheduler, e.g. tcp://host:8786")] = None,
    dask_workers: Annotated[int | None, typer.Option(help="workers of a cluster started here (CPU)")] = None,
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
    meta: MetaOption = [],  # noqa: B006
    meta_file: MetaFileOption = None,
    allow_vrt: Annotated[bool | None, typer.Option("--allow-vrt", help="read a VRT input (trusted only)")] = None,
    allow_remote: Annotated[
        bool | None, typer.Option("--allow-remote", help="read URLs and GDAL virtual file systems (/vsicurl/, /vsis3/)")
    ] = None,
) -> None:
    """Segment an orthomosaic into a georeferenced defect mask (COG) + confidence + survey.json + report.

    Runs the Prefect survey flow (resumable: a rerun after a crash re-does only missing blocks).
    Without --model the registry's champion is used (the shipped model becomes the first champion).
    """
    if engine not in ("local", "dask"):
        raise MsafError(f"--engine must be local or dask, got {engine!r}")
    flags = {
        "device": device,
        "tile": tile,
        "overlap": overlap,
        "block": block,
        "batch": batch,
        "workers": workers,
        "tta": tta,
        "allow_vrt": allow_vrt,
        "allow_remote": allow_remote,
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    all_params = _load_optional_params(params, overrides)
    from pipeline.job import parse_job

    job = parse_job(meta, meta_file)
    from flows.survey import run_survey_flow
    from pipeline.survey import prepare_survey

    # validate before any orchestration starts: mistakes become one line, not a failed flow run
    model_ref = None
    if track or model is None:
        from pipeline.tracking.store import init_tracking

        init_tracking()  # a broken store is one line here, not a failed flow later
    if model is None:
        from pipeline.tracking.registry import resolve_default_model

        model, model_ref = resolve_default_model(all_params.registry.name, all_params.registry.alias)
    from pipeline.survey_folder import exclusive

    with exclusive(out):  # one survey per folder; dropped by the kernel whatever ends this process
        prepared = prepare_survey(
            ortho, out, all_params.survey, model_path=model, model_ref=model_ref, assume_crs=assume_crs, job=job
        )
        with _block_progress(prepared):
            outcome = run_survey_flow(
                str(ortho),
                str(out),
                engine=engine,
                dask_address=dask_address,
                dask_workers=dask_workers,
                prepared=prepared,
                model=str(model),
                model_ref=model_ref,
                params_path=_params_for_flow(params),
                overrides=overrides,
                assume_crs=assume_crs,
                report=with_report,
                track=track,
            )
    record = outcome.record
    pixels = ", ".join(f"{name} {count:,}" for name, count in record.class_pixels.items())
    if record.model.registry:
        console.print(f"model: {record.model.registry}")
    console.print(
        f"{record.input.width}x{record.input.height} px in {record.timings.total_s:.1f} s "
        f"({record.throughput_mpix_s.end_to_end:.2f} Mpix/s, peak RSS {record.peak_rss_mb:.0f} MiB, "
        f"{record.tiling.blocks_reused} of {record.tiling.blocks} blocks reused)"
    )
    console.print(f"class pixels: {pixels}")
    console.print(f"wrote {out / 'mask.tif'}, {out / 'confidence.tif'}, {out / 'survey.json'}")
    if outcome.report:
        _print_report_summary(out, outcome.report)
    if outcome.mlflow_run:
        console.print(f"MLflow run {outcome.mlflow_run} (experiment 'surveys')")


@contextmanager
def _block_progress(prepared: Any) -> Iterator[None]:
    """A progress bar of finished blocks, read from the block store (works for every engine)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    stop = threading.Event()
    total = prepared.n_blocks
    columns = (TextColumn("blocks"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("survey", total=total)

        def poll() -> None:
            while not stop.wait(0.5):
                folder = prepared.store_dir
                done = len(list(folder.glob("block_*.blk"))) if folder.exists() else total
                progress.update(task, completed=done)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()


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
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
) -> None:
    """Compose test data: a georeferenced raster of labelled photos with exact truth (not an orthomosaicking tool)."""
    from pipeline.data.mosaic import compose_mosaic

    if compress not in ("jpeg", "deflate"):
        raise MsafError(f"--compress must be jpeg or deflate, got {compress!r}")
    codec: Literal["jpeg", "deflate"] = "jpeg" if compress == "jpeg" else "deflate"
    width, height = _parse_size(size)
    classes = _load_optional_params(params).data.classes
    summary = compose_mosaic(
        images, masks, out, truth, width, height, gsd, crs, classes, compress=codec, footprint=footprint, seed=seed
    )
    console.print(
        f"wrote {out} and {truth}: {width}x{height} px at {gsd * 1000:g} mm/px ({summary['crs']}), "
        f"footprint {summary['footprint_fraction']:.0%}, defects {summary['defect_fraction']:.2%}"
    )


@app.command()
@user_errors
def report(
    survey_dir: Annotated[Path, typer.Argument(help="survey folder (mask.tif, confidence.tif, survey.json)")],
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
    image: Annotated[
        Path | None,
        typer.Option(help="orthomosaic to read crack widths from (default: the survey's input, if still there)"),
    ] = None,
    meta: MetaOption = [],  # noqa: B006  (with `msaf report`: added to the survey's details)
    meta_file: MetaFileOption = None,
    pdf: Annotated[bool, typer.Option("--pdf", help="also print report.pdf with headless chromium")] = False,
    paper: Annotated[str, typer.Option(help="paper for --pdf: a4 or letter")] = "a4",
) -> None:
    """Vectorise and measure defects; write defects.gpkg/.geojson/.csv/.parquet and report.html (and .pdf)."""
    from pipeline.job import parse_job
    from pipeline.report.build import report_survey

    if paper.lower() not in ("a4", "letter"):
        raise MsafError(f"--paper must be a4 or letter, got {paper!r}")
    summary = report_survey(survey_dir, _load_optional_params(params).report, image, job=parse_job(meta, meta_file))
    if pdf:
        from pipeline.report.pdf import print_pdf

        summary["outputs"]["pdf"] = print_pdf(survey_dir / "report.html", survey_dir / "report.pdf", paper).name
    _print_report_summary(survey_dir, summary)


@app.command()
@user_errors
def compare(
    old_survey: Annotated[Path, typer.Argument(help="earlier survey folder")],
    new_survey: Annotated[Path, typer.Argument(help="later survey folder")],
    out: Annotated[Path, typer.Option(help="folder for changes.gpkg/.geojson/.csv and report.html")],
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
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
@user_errors
def schedule(
    inbox: Annotated[Path | None, typer.Option(help="folder where new orthomosaics arrive")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for the surveys (one sub-folder each)")] = None,
    cron: Annotated[str, typer.Option(help="cron schedule (server time zone)")] = "0 2 * * *",
    name: Annotated[str, typer.Option(help="deployment name")] = "msaf-inbox",
    model: Annotated[Path | None, typer.Option(help="checkpoint (default: the registry champion)")] = None,
    retrain: Annotated[bool, typer.Option("--retrain", help="schedule `dvc repro` retraining instead")] = False,
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
) -> None:
    """Serve a Prefect deployment on a cron schedule (needs a running `prefect server start`)."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        raise MsafError(
            "scheduling needs a Prefect server: run `prefect server start` (SQLite, no other service) "
            "and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    if retrain:
        from flows.retrain import retrain_flow

        console.print(f"serving deployment msaf-retrain/{name} ({cron}) against {api}; Ctrl-C stops it")
        retrain_flow.serve(name=name, cron=cron, parameters={"project": str(Path.cwd())})
        return
    if inbox is None or out is None:
        raise MsafError("--inbox and --out are required (or --retrain)")
    if not inbox.is_dir():
        raise MsafError(f"inbox folder not found: {inbox}")
    from flows.inbox import inbox_flow

    parameters = {
        "inbox": str(inbox.resolve()),
        "out": str(out.resolve()),
        "params_path": _params_for_flow(params),
        "model": str(model.resolve()) if model else None,
    }
    console.print(
        f"serving deployment msaf-inbox/{name} ({cron}) against the Prefect server at {api}; "
        "each run surveys every new orthomosaic in the inbox once. Ctrl-C stops it."
    )
    inbox_flow.serve(name=name, cron=cron, parameters=parameters)


models_app = typer.Typer(no_args_is_help=True, help="The MLflow model registry (champion = what surveys use).")
app.add_typer(models_app, name="models")


def _registry(params: Path | None) -> tuple[str, str]:
    from pipeline.tracking.store import init_tracking

    cfg = _load_optional_params(params).registry
    init_tracking()
    return cfg.name, cfg.alias


@models_app.command("list")
@user_errors
def models_list(params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None) -> None:
    """Registered versions with their aliases and validation scores."""
    from pipeline.tracking.registry import SCORE_TAG, list_versions

    name, _ = _registry(params)
    table = Table(title=f"registered model {name}")
    for column in ("version", "aliases", SCORE_TAG, "run_id"):
        table.add_column(column)
    for row in list_versions(name):
        table.add_row(*(str(row[c]) for c in ("version", "aliases", SCORE_TAG, "run_id")))
    console.print(table)


@models_app.command("show")
@user_errors
def models_show(
    ref: Annotated[str, typer.Argument(help="version number or alias")] = "champion",
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
) -> None:
    """One version (by number or alias) and its tags."""
    from pipeline.tracking.registry import show

    name, _ = _registry(params)
    console.print_json(json.dumps(show(name, ref), default=str))


@models_app.command("promote")
@user_errors
def models_promote(
    version: Annotated[str, typer.Argument(help="version number to make the champion")],
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
) -> None:
    """Point the champion alias at a version by hand (no score gate)."""
    from pipeline.tracking.registry import promote

    name, alias = _registry(params)
    promote(name, version, alias)
    console.print(f"{name}@{alias} -> version {version}")


@models_app.command("export")
@user_errors
def models_export(
    model: Annotated[Path, typer.Option(help="checkpoint to export")],
    out: Annotated[Path, typer.Option(help="checkpoint to write")],
    half: Annotated[bool, typer.Option("--half/--full", help="store weights as fp16 (half the size)")] = True,
) -> None:
    """Re-save a checkpoint (e.g. as fp16 for shipping); the metadata is kept as it is."""
    from pipeline.checkpoint import load_checkpoint, save_checkpoint

    network, meta = load_checkpoint(model)
    sha = save_checkpoint(out, network, meta, half=half)
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {sha[:12]})")


@models_app.command("register")
@user_errors
def models_register(
    model: Annotated[Path, typer.Option(help="candidate checkpoint")],
    metrics: Annotated[Path, typer.Option(help="evaluation metrics JSON of the candidate")],
    run_info: Annotated[Path | None, typer.Option(help="training run JSON (links the version to its run)")] = None,
    decision: Annotated[Path, typer.Option(help="registry decision JSON to write")] = Path("metrics/registry.json"),
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
) -> None:
    """Register a candidate; promote it to champion only if its val tolerant F1 >= the champion's."""
    from pipeline.checkpoint import read_metadata
    from pipeline.metrics.summary import read_evaluation
    from pipeline.tracking.registry import register_checkpoint

    read_metadata(model)  # a clear error for a missing or foreign file
    evaluation = read_evaluation(metrics)  # and for metrics of another shape, before the store is touched
    name, alias = _registry(params)
    info = json.loads(run_info.read_text()) if run_info and run_info.is_file() else {}
    result = register_checkpoint(model, evaluation, name, alias, info.get("run_id"), info.get("model_uri"))
    result.write(decision)
    score = evaluation.score
    verdict = "promoted to" if result.promoted else "registered, not promoted; stays"
    console.print(
        f"{name} version {result.version} (score {score:.4f}) {verdict} {alias}"
        + (
            f" (champion v{result.champion_version}: {result.champion_score:.4f})"
            if result.champion_version and not result.promoted
            else ""
        )
    )


@app.command()
def doctor() -> None:
    """Print versions, devices and which settings, model and stores are used (and why), for bug reports."""
    import importlib.util

    import numpy
    import rasterio
    import torch

    from pipeline.locations import params_path, project_dir, shipped_model, state_root, user_home
    from pipeline.tracking.store import tracking_uri

    rows = {
        "msaf-pipeline": pipeline.__version__,
        "python": platform.python_version(),
        "torch": f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})",
        "cpu threads": str(torch.get_num_threads()),
        "numpy": numpy.__version__,
        "rasterio / GDAL": f"{rasterio.__version__} / {rasterio.__gdal_version__}",
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            bf16 = "yes" if torch.cuda.is_bf16_supported() else "no"
            rows[f"cuda:{index}"] = (
                f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute {props.major}.{props.minor}, bf16 {bf16}"
            )
    else:
        rows["cuda"] = "not available (surveys run on the CPU)"
    rows["dask-cuda"] = (
        "installed (one Dask worker per GPU)"
        if importlib.util.find_spec("dask_cuda")
        else "not installed (pip install -e .[gpu] for --engine dask on GPUs)"
    )
    path, source = params_path(None)
    rows["params"] = f"{path} ({source})" if path else "built-in defaults (no project folder, no MSAF_PARAMS)"
    project = project_dir()
    rows["project folder"] = str(project) if project else "none (not inside a folder with params.yaml + dvc.yaml)"
    rows["user data"] = f"{user_home()} (MSAF_HOME)" if os.environ.get("MSAF_HOME") else str(user_home())
    rows["tracking store"] = tracking_uri() + (
        " (MLFLOW_TRACKING_URI)"
        if os.environ.get("MLFLOW_TRACKING_URI")
        else f" ({'project folder' if project else 'user data'})"
    )
    rows["artifacts"] = str(state_root() / "mlartifacts")
    shipped = shipped_model()
    rows["default model"] = f"the registry's champion; the first one is the shipped model {shipped}" + (
        "" if shipped.is_file() else " (MISSING: reinstall msaf-pipeline)"
    )
    api = os.environ.get("PREFECT_API_URL")
    rows["prefect api"] = api or "a temporary server per survey (bound to it; set PREFECT_API_URL to use yours)"
    for key, value in rows.items():
        console.print(f"{key:>16}: {value}", highlight=False, markup=False)


def main() -> None:
    """Console-script entry point."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    # a missing georeference is reported as a clear error (or handled with --assume-crs), not a warning
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    # the terminal shows progress and results; Prefect's run logs stay in its API/UI (set INFO to see them here)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    app()


if __name__ == "__main__":
    main()
