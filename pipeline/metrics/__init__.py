"""Segmentation metrics: confusion matrix, per-class IoU/precision/recall/F1, tolerant crack F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.ndimage import distance_transform_edt, label
from skimage.morphology import skeletonize

from pipeline.class_ids import NO_CLASS
from pipeline.metrics.summary import ClassMetrics, MetricsSummary

EIGHT_CONNECTED = np.ones((3, 3), bool)
MIN_WIDTH_SKELETON_PX = 5  # shorter pieces are specks, not cracks: their width is not measured


def component_widths(mask: np.ndarray) -> list[float]:
    """Mean width (px) of each 8-connected piece of a binary mask: its pixels over its centreline length.

    The same measure as the accuracy notes' label widths (pixels / skeleton pixels), per piece.
    """
    if not mask.any():
        return []
    pieces, count = label(mask, structure=EIGHT_CONNECTED)
    skeleton = skeletonize(mask)
    area = np.bincount(pieces.ravel(), minlength=count + 1)
    length = np.bincount(pieces[skeleton], minlength=count + 1)
    return [float(area[i] / length[i]) for i in range(1, count + 1) if length[i] >= MIN_WIDTH_SKELETON_PX]


def confusion_matrix(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = NO_CLASS
) -> np.ndarray:
    """Counts ``cm[true, predicted]`` over pixels whose target is not ``ignore_index``."""
    valid = target != ignore_index
    index = target[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def _f1(precision: float, recall: float) -> float:
    """F1; undefined without true pixels, 0 when there are true pixels but no predictions."""
    if np.isnan(recall):
        return float("nan")
    if np.isnan(precision):
        return 0.0
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def tolerant_counts(
    pred_mask: np.ndarray, true_mask: np.ndarray, tolerance: float, valid: np.ndarray | None = None
) -> np.ndarray:
    """Counts for F1 with a distance tolerance (thin structures, e.g. cracks).

    A predicted pixel is correct if a true pixel lies within ``tolerance`` px, and a true pixel is
    found if a predicted pixel lies within ``tolerance`` px.

    Returns:
        int64 array ``[matched_pred, total_pred, matched_true, total_true]``.
    """
    if valid is not None:
        pred_mask, true_mask = pred_mask & valid, true_mask & valid
    total_pred, total_true = int(pred_mask.sum()), int(true_mask.sum())
    matched_pred = matched_true = 0
    if total_pred and total_true:
        dist_to_true = distance_transform_edt(~true_mask)
        dist_to_pred = distance_transform_edt(~pred_mask)
        matched_pred = int((dist_to_true[pred_mask] <= tolerance).sum())
        matched_true = int((dist_to_pred[true_mask] <= tolerance).sum())
    return np.array([matched_pred, total_pred, matched_true, total_true], dtype=np.int64)


class SegmentationMetrics:
    """Accumulates a confusion matrix and tolerant counts over many images, then summarises.

    Args:
        class_names: names of the classes, index = class id; class 0 is background.
        tolerance_px: tolerance for the thin-structure F1 (2 px is the crack convention).
        ignore_index: target value that is left out of every count.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        tolerance_px: float = 2,
        ignore_index: int = NO_CLASS,
        width_classes: Sequence[int] = (),
    ) -> None:
        self.class_names = list(class_names)
        self.width_classes = list(width_classes)
        self.widths: dict[int, tuple[list[float], list[float]]] = {c: ([], []) for c in self.width_classes}
        self.tolerance_px = tolerance_px
        self.ignore_index = ignore_index
        n = len(self.class_names)
        self.confusion = np.zeros((n, n), dtype=np.int64)
        self.tolerant = np.zeros((n, 4), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one image's predicted and true class ids (same 2-D shape)."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
        n = len(self.class_names)
        self.confusion += confusion_matrix(pred, target, n, self.ignore_index)
        valid = target != self.ignore_index
        for cls in range(1, n):
            self.tolerant[cls] += tolerant_counts(pred == cls, target == cls, self.tolerance_px, valid)
        for cls in self.width_classes:
            predicted, true = self.widths[cls]
            predicted += component_widths((pred == cls) & valid)
            true += component_widths(target == cls)

    def compute(self) -> MetricsSummary:
        """Per-class and mean metrics; foreground means leave out class 0 (background)."""
        cm = self.confusion
        per_class: dict[str, dict[str, Any]] = {}
        for cls, name in enumerate(self.class_names):
            tp = cm[cls, cls]
            fp = cm[:, cls].sum() - tp
            fn = cm[cls, :].sum() - tp
            precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
            entry: dict[str, Any] = {
                "iou": _ratio(tp, tp + fp + fn),
                "precision": precision,
                "recall": recall,
                "f1": _f1(precision, recall),
                "support": int(cm[cls, :].sum()),
            }
            if cls > 0:
                mp, tpred, mt, ttrue = self.tolerant[cls]
                tol_p, tol_r = _ratio(mp, tpred), _ratio(mt, ttrue)
                entry |= {"tol_precision": tol_p, "tol_recall": tol_r, "tol_f1": _f1(tol_p, tol_r)}
            if cm[cls, :].sum():
                entry["predicted_as"] = {
                    other: float(cm[cls, j] / cm[cls, :].sum()) for j, other in enumerate(self.class_names) if j != cls
                }
            if cls in self.widths:
                predicted, true = self.widths[cls]
                entry |= {
                    "median_width_px": float(np.median(predicted)) if predicted else float("nan"),
                    "median_true_width_px": float(np.median(true)) if true else float("nan"),
                }
            per_class[name] = entry
        foreground = list(per_class.values())[1:]
        return MetricsSummary(
            classes={name: ClassMetrics(**entry) for name, entry in per_class.items()},
            miou=float(np.nanmean([c["iou"] for c in per_class.values()])),
            fg_iou=float(np.nanmean([c["iou"] for c in foreground])),
            fg_f1=float(np.nanmean([c["f1"] for c in foreground])),
            fg_tol_f1=float(np.nanmean([c["tol_f1"] for c in foreground])),
            pixel_accuracy=_ratio(np.trace(cm), cm.sum()),
            tolerance_px=self.tolerance_px,
            confusion_matrix=cm.tolist(),
        )
