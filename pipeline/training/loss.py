"""DSNet's training loss: OHEM cross-entropy + auxiliary CE, with an optional Dice term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.config import LossConfig
from pipeline.data import IGNORE_INDEX


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, thresh: float, min_kept: int,
                       ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy averaged over the hard pixels only.

    Pixels whose true-class probability is below ``thresh`` are hard; at least ``min_kept`` of the
    hardest are kept (capped at the number of valid pixels), so easy background does not swamp
    thin cracks.
    """
    pixel_loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none").flatten()
    valid = target.flatten() != ignore_index
    losses = pixel_loss[valid]
    if losses.numel() == 0:
        return logits.sum() * 0.0
    with torch.no_grad():
        true_prob = torch.exp(-losses)  # p(true class) = exp(-CE)
        keep = min(max(min_kept, 1), losses.numel())
        kth = torch.sort(true_prob).values[keep - 1]
        threshold = torch.maximum(kth, torch.tensor(thresh, dtype=kth.dtype, device=kth.device))
        hard = true_prob <= threshold
    return losses[hard].mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Soft Dice over the foreground classes (1..C-1); helps when cracks are ~1-2 % of pixels."""
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(max=num_classes - 1) * valid.squeeze(1), num_classes)
    onehot = onehot.permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1 - dice[1:].mean()


def segmentation_loss(outputs: tuple[torch.Tensor, ...], target: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Weighted sum: main OHEM CE + plain CE on each auxiliary head (+ Dice on the main output)."""
    main, *aux = outputs
    loss = cfg.main_weight * ohem_cross_entropy(main, target, cfg.ohem_thresh, cfg.ohem_min_kept)
    for weight, logits in zip(cfg.aux_weights, aux, strict=False):
        loss = loss + weight * F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    if cfg.dice_weight:
        loss = loss + cfg.dice_weight * dice_loss(main, target)
    return loss
