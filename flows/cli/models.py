"""`msaf models ...`: the MLflow registry (the champion is what surveys use)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

if TYPE_CHECKING:
    import torch

    from pipeline.checkpoint import ModelMetadata
    from pipeline.data import LabelledImage
    from pipeline.metrics.summary import EvaluationSummary
    from pipeline.tracking.gate import GateVerdict

from flows.cli.app import (
    PARAMS_HELP,
    console,
    fmt,
    load_optional_params,
    parse_views,
    user_errors,
)

models_app = typer.Typer(no_args_is_help=True, help="The MLflow model registry (champion = what surveys use).")


def _registry(params: Path | None) -> tuple[str, str]:
    from pipeline.tracking.store import init_tracking

    cfg = load_optional_params(params).registry
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


TunedOn = Annotated[Path, typer.Option(help="prepared manifest: its held-back photos are what it is tuned on")]
CopyOut = Annotated[Path, typer.Option(help="checkpoint to write (the same weights; may be --model)")]
SplitOption = Annotated[str, typer.Option(help="manifest split: val, train or all")]
ToleranceOption = Annotated[float, typer.Option(help="tolerance (px) for the thin-structure F1")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda")]


def _held_back(
    model: Path, manifest: Path, split: str, device: str
) -> tuple[torch.nn.Module, ModelMetadata, dict[str, list[LabelledImage]]]:
    """The model (on ``device``) and the manifest's labelled sets it is calibrated on."""
    from pipeline.checkpoint import load_checkpoint
    from pipeline.data.manifest import load_manifest
    from pipeline.errors import MsafError
    from pipeline.inference.device import resolve_device

    if split not in ("val", "train", "all"):
        raise MsafError(f"--split must be val, train or all, got {split!r}")
    network, meta = load_checkpoint(model, resolve_device(device))
    return network, meta, load_manifest(manifest).load(split)


def _print_scores(title: str, before: tuple[str, EvaluationSummary], after: tuple[str, EvaluationSummary]) -> None:
    """Per-set scores of a model before and after a calibration, side by side."""
    table = Table(title=title)
    for column in ("set", f"score: {before[0]}", f"score: {after[0]}"):
        table.add_column(column)
    for name, part in after[1].sets.items():
        table.add_row(name, fmt(before[1].sets[name].score), fmt(part.score))
    table.add_row("mean", fmt(before[1].score), fmt(after[1].score))
    console.print(table)
    console.print("score: tolerant F1 of the calibrated classes (the training's selection score)")


@models_app.command("calibrate")
@user_errors
def models_calibrate(
    model: Annotated[Path, typer.Option(help="checkpoint to calibrate")],
    manifest: TunedOn,
    scales: Annotated[str, typer.Option(help="the survey's views (survey.scales), e.g. 1,2")],
    out: CopyOut,
    split: SplitOption = "val",
    tolerance: ToleranceOption = 2,
    device: DeviceOption = "auto",
) -> None:
    """Calibrate a model's decision thresholds for a multi-scale survey (--scales) on held-back photos;
    write a copy holding them beside its single-view ones (weights unchanged)."""
    from pipeline.checkpoint import save_metadata
    from pipeline.errors import MsafError
    from pipeline.evaluate import calibrate_views, evaluate_sets
    from pipeline.inference.scales import SINGLE, scales_key

    views = parse_views(scales)
    if views == SINGLE:
        raise MsafError("--scales 1 is the single view, calibrated in training; give the survey's views, e.g. 1,2")
    network, meta, sets = _held_back(model, manifest, split, device)
    single = evaluate_sets(model, sets, tolerance_px=tolerance, loaded=(network, meta))
    thresholds, summary = calibrate_views(network, meta, sets, views, tolerance)
    key = scales_key(views)
    calibrated = meta.model_copy(
        update={
            "scale_thresholds": meta.scale_thresholds | {key: thresholds},
            "metrics": meta.metrics | {"views": meta.metrics.get("views", {}) | {key: summary.to_json()}},
        }
    )
    sha = save_metadata(model, out, type(meta).model_validate(calibrated.model_dump()))
    title = f"{model.name} on {manifest} ({split}): one view vs views {key}"
    _print_scores(title, ("one view", single), (f"views {key}", summary))
    console.print(f"thresholds: one view {meta.thresholds}, views {key} {thresholds}")
    console.print(f"wrote {out} (sha256 {sha[:12]})")


@models_app.command("exposure")
@user_errors
def models_exposure(
    model: Annotated[Path, typer.Option(help="checkpoint to set the floor of")],
    manifest: TunedOn,
    floor: Annotated[float, typer.Option(help="mean luminance (0-255) dark tiles are lifted to; 0: none")],
    out: CopyOut,
    split: SplitOption = "val",
    tolerance: ToleranceOption = 2,
    device: DeviceOption = "auto",
) -> None:
    """Set a model's exposure floor (tiles darker are lifted to it before the network) and calibrate
    its thresholds again under it on held-back photos; write a copy (weights unchanged)."""
    from pipeline.checkpoint import save_metadata
    from pipeline.errors import MsafError
    from pipeline.evaluate import evaluate_sets, with_exposure_floor

    if not 0 <= floor <= 255:
        raise MsafError(f"--floor is a mean luminance from 0 to 255, got {floor:g}")
    network, meta, sets = _held_back(model, manifest, split, device)
    before = evaluate_sets(model, sets, tolerance_px=tolerance, loaded=(network, meta))
    lifted, after = with_exposure_floor(network, meta, sets, floor, tolerance)
    sha = save_metadata(model, out, lifted)
    was = f"floor {meta.exposure_floor:g}"
    _print_scores(
        f"{model.name} on {manifest} ({split}): {was} vs {floor:g}", (was, before), (f"floor {floor:g}", after)
    )
    console.print(f"thresholds: one view {meta.thresholds} -> {lifted.thresholds}; views {lifted.scale_thresholds}")
    console.print(f"wrote {out} (sha256 {sha[:12]})")


def _judge(candidate_path: Path, candidate: EvaluationSummary, manifest: Path, params: Path | None) -> GateVerdict:
    """The champion (the shipped model when the registry has none) scored on the same validation data,
    and with ``registry.survey_size`` both surveyed on the same stitched mosaics of it."""
    from pipeline.data.manifest import load_manifest
    from pipeline.survey_accuracy import survey_scores
    from pipeline.tracking.gate import champion_evaluation, champion_survey_scores, judge
    from pipeline.tracking.registry import resolve_default_model
    from pipeline.tracking.store import project_root

    settings = load_optional_params(params)
    champion_path, _ = resolve_default_model(settings.registry.name, settings.registry.alias)
    cache = project_root() / ".msaf-cache" / "evaluations"
    held_back = load_manifest(manifest)
    champion = champion_evaluation(champion_path, held_back, candidate.tolerance_px, cache)
    size = settings.registry.survey_size
    surveys = (
        (survey_scores(candidate_path, held_back, size), champion_survey_scores(champion_path, held_back, size, cache))
        if size
        else (None, None)
    )
    return judge(candidate, champion, settings.registry.guard_sets, settings.registry.tolerance, *surveys)


@models_app.command("register")
@user_errors
def models_register(
    model: Annotated[Path, typer.Option(help="candidate checkpoint")],
    metrics: Annotated[Path, typer.Option(help="evaluation metrics JSON of the candidate")],
    run_info: Annotated[Path | None, typer.Option(help="training run JSON (links the version to its run)")] = None,
    decision: Annotated[Path, typer.Option(help="registry decision JSON to write")] = Path("metrics/registry.json"),
    manifest: Annotated[
        Path | None, typer.Option(help="score the champion on this manifest's val split too and gate per set")
    ] = None,
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
) -> None:
    """Register a candidate; promote it to champion only if it beats the champion (with --manifest: both
    scored on the same held-back data, and no guarded set regressing by more than registry.tolerance)."""
    from pipeline.checkpoint import read_metadata
    from pipeline.metrics.summary import read_evaluation
    from pipeline.tracking.registry import register_checkpoint

    read_metadata(model)  # a clear error for a missing or foreign file
    evaluation = read_evaluation(metrics)  # and for metrics of another shape, before the store is touched
    name, alias = _registry(params)
    verdict = _judge(model, evaluation, manifest, params) if manifest else None
    info = json.loads(run_info.read_text()) if run_info and run_info.is_file() else {}
    result = register_checkpoint(model, evaluation, name, alias, info.get("run_id"), info.get("model_uri"), verdict)
    result.write(decision)
    if verdict:
        for set_name, (new, old) in verdict.survey.items():
            console.print(f"survey of {set_name}: {new:.3f}" + (f" (champion {old:.3f})" if old is not None else ""))
        console.print(f"gate: {verdict.reason}")
    score = evaluation.score
    outcome = "promoted to" if result.promoted else "registered, not promoted; stays"
    console.print(
        f"{name} version {result.version} (score {score:.4f}) {outcome} {alias}"
        + (
            f" (champion v{result.champion_version}: {result.champion_score:.4f})"
            if result.champion_version and not result.promoted
            else ""
        )
    )
