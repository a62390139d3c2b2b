"""`msaf prepare`, `train`, `evaluate`: the DVC stages' commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from pipeline.errors import MsafError

if TYPE_CHECKING:
    from pipeline.metrics.summary import EvaluationSummary, MetricsSummary
    from pipeline.training.history import EpochRecord

from flows.cli.app import (
    PARAMS_HELP,
    SCALES_HELP,
    console,
    fmt,
    parse_sets,
    parse_views,
    required_params,
    user_errors,
)

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
                *(fmt(values[k] if values[k] is not None else "") for k in METRIC_COLUMNS),
                width,
                fmt(m.support),
            )
    console.print(table)
    console.print(
        f"mIoU {summary.miou:.4f}  foreground IoU {summary.fg_iou:.4f}  F1 {summary.fg_f1:.4f}  "
        f"tolerant F1 {summary.fg_tol_f1:.4f}  score (mean over sets) {summary.score:.4f}"
    )


@user_errors
def prepare(
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
    out: Annotated[Path, typer.Option(help="manifest to write")] = Path("data/prepared/manifest.json"),
) -> None:
    """Validate the labelled data and write the deterministic train/val manifest (DVC stage 'prepare')."""
    from pipeline.config import load_params
    from pipeline.data.manifest import build_manifest, save_manifest

    manifest = build_manifest(load_params(required_params(params)).data)
    save_manifest(manifest, out)
    for entry in manifest.sets:
        console.print(
            f"{entry.name}: {len(entry.train)} train + {len(entry.val)} val images, "
            f"fingerprint {entry.fingerprint[:12]}"
        )
    console.print(f"wrote {out}")


@user_errors
def train(
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help="checkpoint path (default: train.out)")] = None,
    manifest: Annotated[Path | None, typer.Option(help="prepared manifest (default: split from params)")] = None,
    history: Annotated[Path | None, typer.Option(help="per-epoch metrics CSV to write (for dvc plots)")] = None,
    run_info: Annotated[Path | None, typer.Option(help="JSON with the MLflow run id and model URI")] = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="log the run to MLflow")] = True,
    set_: Annotated[list[str], typer.Option("--set", help="override a param, e.g. train.epochs=3")] = [],  # noqa: B006
    finetune: Annotated[
        bool, typer.Option("--finetune", help="the CPU fine-tuning schedule: from the champion, 2 x 100 steps")
    ] = False,
) -> None:
    """Train a model from params.yaml and write a safetensors checkpoint (logged to MLflow)."""
    from pipeline.config import finetune_preset, load_params
    from pipeline.data.manifest import load_manifest
    from pipeline.training.trainer import load_training_data, train_model

    path = required_params(params)
    overrides = parse_sets(set_)
    if finetune:  # the preset, then the --set values (which win)
        overrides = finetune_preset(load_params(path)) | overrides
    cfg = load_params(path, overrides)
    data = load_training_data(cfg, load_manifest(manifest) if manifest else None)  # data mistakes: before any run
    console.print(
        f"training [bold]{cfg.model.preset}[/] on {', '.join(s.name for s in data.manifest.sets)} "
        f"for {cfg.train.epochs} epochs"
    )

    def report(r: EpochRecord) -> None:
        per_set = "  ".join(f"{name} {score:.4f}" for name, score in r.set_scores.items())
        limits = "  ".join(f"t({name}) {value:.2f}" for name, value in r.thresholds.items())
        console.print(
            f"epoch {r.epoch:3d}/{cfg.train.epochs}  loss {r.loss:.4f}  lr {r.lr:.2e}  "
            f"val IoU {r.val_fg_iou:.4f}  F1 {r.val_fg_f1:.4f}  tol-F1 {r.val_fg_tol_f1:.4f}  "
            f"({per_set}) {limits} score {r.val_score:.4f} ({r.seconds or 0:.1f} s)"
        )

    def run(on_epoch: Callable[[EpochRecord], None] = lambda r: None) -> Any:
        def each_epoch(record: EpochRecord) -> None:
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
            pd.DataFrame([r.flat(timings=False) for r in result.history]).to_csv(tmp, index=False)
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
    scales: Annotated[str, typer.Option(help=SCALES_HELP + "; scored with the thresholds a survey uses")] = "1",
) -> None:
    """Score a model on labelled images; print a table and write metrics JSON."""
    from pipeline.evaluate import evaluate_folder

    views = parse_views(scales)
    from pipeline.checkpoint import read_metadata
    from pipeline.inference.scales import scales_key

    if not read_metadata(model).calibrated_for(views):
        console.print(
            f"note: {model.name} has no thresholds calibrated for the views {scales_key(views)}; scored with its"
            " single view's (msaf models calibrate makes a calibrated copy)"
        )
    if manifest is not None:
        from pipeline.data.manifest import load_manifest

        if split not in ("val", "train", "all"):
            raise MsafError(f"--split must be val, train or all, got {split!r}")
        from pipeline.evaluate import evaluate_sets

        sets = load_manifest(manifest).load(split)
        summary = evaluate_sets(model, sets, device=device, tolerance_px=tolerance, scales=views)
    elif images is not None and masks is not None:
        summary = evaluate_folder(model, images, masks, device=device, tolerance_px=tolerance, scales=views)
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
