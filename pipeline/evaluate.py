"""Evaluate a model on labelled images: the same code for validation during training and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from pipeline.checkpoint import load_checkpoint
from pipeline.data import LabelledImage, Pair, class_lut, find_pairs, load_labelled
from pipeline.inference.device import resolve_device
from pipeline.inference.predict import predict_classes
from pipeline.metrics import SegmentationMetrics
from pipeline.model import DSNet


def evaluate_items(model: DSNet, items: Sequence[LabelledImage], mean: Sequence[float], std: Sequence[float],
                   device: torch.device, class_names: Sequence[str], tolerance_px: float = 2) -> dict[str, object]:
    """Whole-image predictions on each item, accumulated into one metrics summary."""
    was_training = model.training
    model.eval()
    metrics = SegmentationMetrics(class_names, tolerance_px)
    for item in items:
        metrics.update(predict_classes(model, item.image, mean, std, device), item.labels)
    model.train(was_training)
    summary = metrics.compute()
    summary["images"] = len(items)
    return summary


def evaluate_folder(checkpoint: Path, images_dir: Path, masks_dir: Path, *, device: str = "auto",
                    tolerance_px: float = 2) -> dict[str, object]:
    """Load a checkpoint and score it on a folder pair, mapping mask values with the model's classes."""
    return evaluate_pairs(checkpoint, find_pairs(images_dir, masks_dir), device=device, tolerance_px=tolerance_px)


def evaluate_pairs(checkpoint: Path, pairs: Sequence[Pair], *, device: str = "auto",
                   tolerance_px: float = 2) -> dict[str, object]:
    """Score a checkpoint on image/mask pairs (e.g. a manifest's held-back split)."""
    model, meta = load_checkpoint(checkpoint, resolve_device(device))
    items = load_labelled(pairs, class_lut(meta.classes))
    summary = evaluate_items(model, items, meta.mean, meta.std, next(model.parameters()).device,
                             meta.class_names, tolerance_px)
    summary["model"] = str(checkpoint)
    return summary
