"""Evaluate a model on labelled images, per data set: the same code for validation during training,
threshold calibration and the CLI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from pipeline.checkpoint import ModelMetadata, load_checkpoint
from pipeline.class_ids import NO_CLASS
from pipeline.data import LabelledImage, Pair, class_lut, find_pairs, load_labelled
from pipeline.inference.decision import Thresholds, decide
from pipeline.inference.device import resolve_device
from pipeline.inference.predict import predict_probabilities
from pipeline.inference.scales import SINGLE, Scales, parse_scales
from pipeline.metrics import SegmentationMetrics
from pipeline.metrics.summary import EvaluationSummary, MetricsSummary

THRESHOLD_GRID = tuple(round(t, 2) for t in np.arange(0.10, 0.91, 0.05))
Scored = list[tuple[np.ndarray, LabelledImage]]  # (probabilities (C, H, W) float16, labelled image)


def predict_items(
    model: torch.nn.Module,
    items: Sequence[LabelledImage],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    scales: Scales = SINGLE,
    exposure_floor: float = 0.0,
) -> Scored:
    """Whole-image class probabilities of each item (float16: memory for many validation photos),
    averaged over the views ``scales`` as a survey with ``survey.scales`` averages them, each image
    lifted to ``exposure_floor`` when darker (``pipeline.inference.predict.lift_shadows``)."""
    was_training = model.training
    model.eval()
    scored = [
        (predict_probabilities(model, item.image, mean, std, device, scales, exposure_floor).astype(np.float16), item)
        for item in items
    ]
    model.train(was_training)
    return scored


def summarise(
    scored: Scored,
    class_names: Sequence[str],
    tolerance_px: float = 2,
    thresholds: Thresholds = (),
    width_classes: Sequence[int] = (),
) -> MetricsSummary:
    """Metrics of one group of images under a decision rule (argmax or thresholds)."""
    metrics = SegmentationMetrics(class_names, tolerance_px, width_classes=width_classes)
    for probs, item in scored:
        pred = decide(torch.from_numpy(probs.astype(np.float32)), thresholds).numpy().astype(np.uint8)
        metrics.update(pred, item.labels)
    return metrics.compute().model_copy(update={"images": len(scored)})


def _tolerant_f1(counts: np.ndarray) -> float:
    matched_pred, total_pred, matched_true, total_true = (int(v) for v in counts)
    if not total_true:
        return float("nan")
    precision = matched_pred / total_pred if total_pred else 0.0
    recall = matched_true / total_true
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def calibrate(
    groups: Mapping[str, Scored],
    cls: int,
    tolerance_px: float = 2,
    others: Thresholds = (),
    grid: Sequence[float] = THRESHOLD_GRID,
) -> tuple[float, float]:
    """The probability threshold of class ``cls`` that maximises its tolerant F1, averaged over the
    groups (data sets) that contain it; ties go to the threshold nearest 0.5.

    Returns:
        (threshold, mean tolerant F1 at it).
    """
    best = (-1.0, 0.5)
    if min(grid) <= 0:
        raise ValueError("calibration thresholds must be positive probabilities")
    rest = [o for o in others if o[0] != cls]
    per_group = np.zeros((len(grid), len(groups)))
    for g, scored in enumerate(groups.values()):
        counts = np.zeros((len(grid), 4), np.int64)
        for probs, item in scored:
            valid = item.labels != NO_CLASS
            truth = (item.labels == cls) & valid
            dist_to_true = distance_transform_edt(~truth) if truth.any() else None
            tensor = torch.from_numpy(probs.astype(np.float32))
            # Where p(cls) >= t > 0, cls scores 1 + p(cls) under every t, so whether it beats the other
            # thresholded classes does not depend on t: one decision per image, not one per threshold
            # (the same class ids as decide() with each threshold; tested).
            contends = (decide(tensor, [*rest, (cls, 0.0)]).numpy() == cls) & valid
            for i, threshold in enumerate(grid):
                pred = (tensor[cls] >= threshold).numpy() & contends
                if dist_to_true is None or not pred.any():
                    counts[i] += [0, int(pred.sum()), 0, int(truth.sum())]
                else:  # the distance to the truth is computed once per image, not per threshold
                    counts[i] += [
                        int((dist_to_true[pred] <= tolerance_px).sum()),
                        int(pred.sum()),
                        int((distance_transform_edt(~pred)[truth] <= tolerance_px).sum()),
                        int(truth.sum()),
                    ]
        per_group[:, g] = [_tolerant_f1(c) for c in counts]
    for i, threshold in enumerate(grid):
        column = per_group[i][~np.isnan(per_group[i])]
        score = float(column.mean()) if column.size else float("nan")
        if np.isnan(score):
            continue
        if score > best[0] + 1e-12 or (abs(score - best[0]) <= 1e-12 and abs(threshold - 0.5) < abs(best[1] - 0.5)):
            best = (score, float(threshold))
    return best[1], best[0]


def calibrate_classes(
    groups: Mapping[str, Scored], class_names: Sequence[str], classes: Sequence[str], tolerance_px: float = 2
) -> dict[str, float]:
    """The thresholds of ``classes``, each calibrated in turn under the thresholds found before it."""
    thresholds: dict[str, float] = {}
    for name in classes:
        others = [(class_names.index(n), t) for n, t in thresholds.items()]
        thresholds[name], _ = calibrate(groups, class_names.index(name), tolerance_px, others)
    return thresholds


def evaluate_groups(
    groups: Mapping[str, Scored],
    class_names: Sequence[str],
    tolerance_px: float = 2,
    thresholds: Mapping[str, float] | None = None,
    score_classes: Sequence[str] = (),
) -> EvaluationSummary:
    """Pooled metrics over every image, plus one summary per data set and the headline ``score``:
    the tolerant F1 of ``score_classes`` (default: every foreground class) averaged over the sets."""
    rule = [(class_names.index(n), t) for n, t in (thresholds or {}).items()]
    widths = [class_names.index(n) for n in (score_classes or class_names[1:])]
    everything = [pair for scored in groups.values() for pair in scored]
    summary = summarise(everything, class_names, tolerance_px, rule, widths)
    per_set = {name: summarise(scored, class_names, tolerance_px, rule, widths) for name, scored in groups.items()}
    wanted = list(score_classes or class_names[1:])
    per_set = {
        name: part.model_copy(update={"score": _nanmean([part.class_tol_f1(n) for n in wanted])})
        for name, part in per_set.items()
    }
    return EvaluationSummary(
        **summary.model_dump(exclude={"score"}, exclude_none=True),
        sets=per_set,
        thresholds=dict(thresholds or {}),
        score=_nanmean([part.score for part in per_set.values() if part.score is not None]),
    )


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the defined values; NaN when none is (a class no image contains)."""
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def evaluate_items(
    model: torch.nn.Module,
    items: Sequence[LabelledImage],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    class_names: Sequence[str],
    tolerance_px: float = 2,
    thresholds: Thresholds = (),
) -> MetricsSummary:
    """Whole-image predictions on each item, accumulated into one metrics summary."""
    return summarise(predict_items(model, items, mean, std, device), class_names, tolerance_px, thresholds)


def evaluate_folder(
    checkpoint: Path,
    images_dir: Path,
    masks_dir: Path,
    *,
    device: str = "auto",
    tolerance_px: float = 2,
    scales: Scales = SINGLE,
) -> EvaluationSummary:
    """Load a checkpoint and score it on a folder pair, mapping mask values with the model's classes."""
    pairs = find_pairs(images_dir, masks_dir)
    return evaluate_pairs(checkpoint, pairs, device=device, tolerance_px=tolerance_px, scales=scales)


def evaluate_pairs(
    checkpoint: Path, pairs: Sequence[Pair], *, device: str = "auto", tolerance_px: float = 2, scales: Scales = SINGLE
) -> EvaluationSummary:
    """Score a checkpoint on image/mask pairs with its own decision rule (mask values: its classes)."""
    model, meta = load_checkpoint(checkpoint, resolve_device(device))
    items = load_labelled(pairs, class_lut(meta.classes))
    return evaluate_sets(
        checkpoint, {"images": items}, device=device, tolerance_px=tolerance_px, loaded=(model, meta), scales=scales
    )


def evaluate_sets(
    checkpoint: Path,
    sets: Mapping[str, Sequence[LabelledImage]],
    *,
    device: str = "auto",
    tolerance_px: float = 2,
    loaded: tuple[torch.nn.Module, Any] | None = None,
    scales: Scales = SINGLE,
) -> EvaluationSummary:
    """Score a checkpoint per data set with its calibrated decision rule for the views ``scales``
    (``ModelMetadata.thresholds_at``: what a survey with them decides by)."""
    model, meta = loaded or load_checkpoint(checkpoint, resolve_device(device))
    groups = predict_sets(model, meta, sets, scales)
    summary = evaluate_groups(
        groups,
        meta.class_names,
        tolerance_px,
        meta.thresholds_at(scales),
        list(meta.thresholds) or meta.class_names[1:],
    )
    return summary.model_copy(update={"model": str(checkpoint)})


def predict_sets(
    model: torch.nn.Module, meta: ModelMetadata, sets: Mapping[str, Sequence[LabelledImage]], scales: Scales
) -> dict[str, Scored]:
    """Each set's items predicted as the model's metadata says (its input scaling and exposure floor)."""
    dev = next(model.parameters()).device
    return {
        name: predict_items(model, items, meta.mean, meta.std, dev, scales, meta.exposure_floor)
        for name, items in sets.items()
    }


def calibrate_views(
    model: torch.nn.Module,
    meta: ModelMetadata,
    sets: Mapping[str, Sequence[LabelledImage]],
    scales: Scales,
    tolerance_px: float = 2,
) -> tuple[dict[str, float], EvaluationSummary]:
    """The model's calibrated classes (``meta.thresholds``) calibrated again for a survey that averages
    the views ``scales``, on these labelled sets; and the scores under those thresholds."""
    groups = predict_sets(model, meta, sets, scales)
    calibrated = list(meta.thresholds)
    thresholds = calibrate_classes(groups, meta.class_names, calibrated, tolerance_px)
    summary = evaluate_groups(groups, meta.class_names, tolerance_px, thresholds, calibrated or meta.class_names[1:])
    return thresholds, summary


def with_exposure_floor(
    model: torch.nn.Module,
    meta: ModelMetadata,
    sets: Mapping[str, Sequence[LabelledImage]],
    floor: float,
    tolerance_px: float = 2,
) -> tuple[ModelMetadata, EvaluationSummary]:
    """The metadata with a new exposure floor and every threshold calibrated again under it (the
    single view's and each multi-scale survey's the model holds: lifted images give other
    probabilities); and the single view's scores under it. The weights are unchanged."""
    lifted = meta.model_copy(update={"exposure_floor": floor})
    thresholds, summary = calibrate_views(model, lifted, sets, SINGLE, tolerance_px)
    lifted = lifted.model_copy(update={"thresholds": thresholds})
    by_views, scores = dict(meta.scale_thresholds), dict(meta.metrics.get("views", {}))
    for key in meta.scale_thresholds:
        by_views[key], views_summary = calibrate_views(model, lifted, sets, parse_scales(key), tolerance_px)
        scores[key] = views_summary.to_json()
    metrics = meta.metrics | {"val": meta.metrics.get("val", {}) | summary.to_json()}
    if scores:
        metrics["views"] = scores
    updated = lifted.model_copy(update={"scale_thresholds": by_views, "metrics": metrics})
    return type(meta).model_validate(updated.model_dump()), summary
