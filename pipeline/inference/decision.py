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
    """Class ids (..., int64) and the chosen class's probability from probabilities (C, ...), in one pass."""
    ids = torch.empty(probs.shape[1:], dtype=torch.int64, device=probs.device)
    top = torch.empty(probs.shape[1:], dtype=probs.dtype, device=probs.device)
    decide_into(probs, thresholds, ids, top)
    return ids, top


def decide_into(probs: torch.Tensor, thresholds: Thresholds, ids: torch.Tensor, top: torch.Tensor) -> None:
    """Write the class ids (any integer dtype, e.g. a uint8 view of the mask) and the chosen class's
    probability (``probs``' dtype) of probabilities (C, ...) into ``ids`` and ``top``.

    The argmax of the classes without a threshold (first index on ties), then each thresholded class
    (in class order) takes the pixels where it reaches its threshold and beats what was chosen among
    thresholded classes so far: the same ids as scoring hits 1 + p and misses -1 and taking the
    argmax, computed in place plane by plane, without copying the C planes or an int64 index (the
    survey's decision went from 0.33 to 0.18 s per 4096² block on one core).
    """
    limit = dict(thresholds)
    rest = [c for c in range(probs.shape[0]) if c not in limit]
    first = rest[0] if rest else 0  # every class thresholded: where none reaches its threshold, class 0
    ids.fill_(first)
    top.copy_(probs[first])
    for cls in rest[1:]:
        p = probs[cls]
        select_into(ids, cls, p > top)
        torch.maximum(top, p, out=top)
    best: torch.Tensor | None = None  # probability of the thresholded class chosen so far
    thresholded = sorted(limit)
    for position, cls in enumerate(thresholded):
        p = probs[cls]
        take = p >= limit[cls] if best is None else (p >= limit[cls]) & (p > best)
        select_into(ids, cls, take)
        select_into(top, p, take)
        if position + 1 < len(thresholded):  # only a later thresholded class needs to know
            if best is None:
                best = torch.full_like(p, -1.0)
            select_into(best, p, take)


def select_into(target: torch.Tensor, value: torch.Tensor | int, where: torch.Tensor) -> None:
    """``target[where] = value`` bit for bit, without a branch per element.

    The masked kernels (``masked_fill_``, ``torch.where``) branch on every element and mispredict
    wherever the mask is noisy: 2.7 ms per 0.5 Mpx on one CPU core against 0.1 ms for this
    all-ones-mask XOR select on the integer bits (floats through an int32 view of the same bits).
    """
    bits = target.view(torch.int32) if target.is_floating_point() else target
    source = value.view(torch.int32) if isinstance(value, torch.Tensor) and value.is_floating_point() else value
    ones = where.to(bits.dtype).neg_()  # True -> all bits set, False -> 0
    bits.bitwise_xor_(torch.bitwise_xor(bits, source).bitwise_and_(ones))
