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
    return decide_with_top(probs, thresholds)[0]


def decide_with_top(probs: torch.Tensor, thresholds: Thresholds = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ids (...) and the chosen class's probability from probabilities (C, ...), in one pass.

    The argmax of the classes without a threshold, then each thresholded class (in class order) takes
    the pixels where it reaches its threshold and beats what was chosen among thresholded classes
    so far: the same ids as scoring hits 1 + p and misses -1 and taking the argmax (first index on
    ties), without copying the C planes.
    """
    if not thresholds:
        top, ids = probs.max(dim=0)
        return ids, top
    thresholded = sorted(cls for cls, _ in thresholds)
    limit = dict(thresholds)
    rest = [c for c in range(probs.shape[0]) if c not in limit]
    if rest:
        top, index = probs[rest].max(dim=0)
        ids = torch.as_tensor(rest, device=probs.device)[index]
    else:  # every class thresholded: where none reaches its threshold, class 0 (the argmax of all -1)
        top, ids = probs[0].clone(), torch.zeros(probs.shape[1:], dtype=torch.int64, device=probs.device)
    best: torch.Tensor | None = None  # probability of the thresholded class chosen so far
    for position, cls in enumerate(thresholded):
        p = probs[cls]
        take = p >= limit[cls] if best is None else (p >= limit[cls]) & (p > best)
        ids = torch.where(take, cls, ids)
        top = torch.where(take, p, top)
        if position + 1 < len(thresholded):  # only a later thresholded class needs to know
            best = torch.where(take, p, torch.full_like(p, -1.0) if best is None else best)
    return ids, top
