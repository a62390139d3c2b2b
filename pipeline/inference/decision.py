"""The decision rule from class probabilities to class ids: argmax, or calibrated thresholds.

Thin cracks rarely reach p = 0.5 across their whole width, so argmax misses them; a threshold
tuned on validation (stored in the model's metadata as ``thresholds``) is applied the same way by
evaluation and surveys: a pixel is a thresholded class when its probability reaches the
threshold (the most probable such class wins), otherwise the argmax of the remaining classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

Thresholds = Sequence[tuple[int, float]]


def threshold_ids(class_names: Sequence[str], thresholds: Mapping[str, float]) -> list[tuple[int, float]]:
    """(class id, threshold) pairs of a metadata ``thresholds`` mapping, in class order."""
    return [(class_names.index(name), float(t)) for name, t in thresholds.items() if name in class_names]


def decide(probs: torch.Tensor, thresholds: Thresholds = ()) -> torch.Tensor:
    """Class ids (...) from probabilities (C, ...)."""
    if not thresholds:
        return probs.argmax(dim=0)
    scores = probs.clone()
    for cls, threshold in thresholds:
        scores[cls] = torch.where(probs[cls] >= threshold, 1.0 + probs[cls], -1.0)
    return scores.argmax(dim=0)
