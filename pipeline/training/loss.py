"""DSNet's training loss: OHEM cross-entropy + auxiliary CE, with optional Dice and Skeleton Recall.

Every term understands partial labels: ``may_hide`` (N, C) marks, per crop, classes its data set
never labels; that crop's background pixels then count as "background or one of those" (the
likelihood of the set of allowed classes), so CFD's unlabelled joints never teach "joint is
background", and its Dice/Skeleton terms skip those classes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.morphology import skeletonize

from pipeline.class_ids import NO_CLASS
from pipeline.config import LossConfig


def pixel_nll(
    logits: torch.Tensor, target: torch.Tensor, may_hide: torch.Tensor | None = None, ignore_index: int = NO_CLASS
) -> torch.Tensor:
    """Per-pixel negative log-likelihood (N, H, W); 0 at ignored pixels.

    Plain cross-entropy, except that a background pixel of a crop whose data set never labels
    class k is scored by -log(p_background + p_k).
    """
    if may_hide is None or not bool(may_hide[:, 1:].any()):
        return F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    num_classes = logits.shape[1]
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).clamp(max=num_classes - 1)
    allowed = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).bool()
    allowed |= (safe == 0).unsqueeze(1) & may_hide.bool()[:, :, None, None]
    logp = logits.float().log_softmax(dim=1)
    nll = -torch.logsumexp(logp.masked_fill(~allowed, float("-inf")), dim=1)
    return nll * valid


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh: float,
    min_kept: int,
    ignore_index: int = NO_CLASS,
    may_hide: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy averaged over the hard pixels only.

    Pixels whose true-class probability is below ``thresh`` are hard; at least ``min_kept`` of the
    hardest are kept (capped at the number of valid pixels), so easy background does not swamp
    thin cracks.
    """
    pixel_loss = pixel_nll(logits, target, may_hide, ignore_index).flatten()
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


def mean_nll(
    logits: torch.Tensor, target: torch.Tensor, may_hide: torch.Tensor | None = None, ignore_index: int = NO_CLASS
) -> torch.Tensor:
    """Cross-entropy (partial-label aware) averaged over the valid pixels."""
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return pixel_nll(logits, target, may_hide, ignore_index)[valid].mean()


def _labelled_samples(
    may_hide: torch.Tensor | None, batch: int, num_classes: int, device: torch.device
) -> torch.Tensor:
    """(N, C) float: 1 where the crop's data set labels the class."""
    if may_hide is None:
        return torch.ones(batch, num_classes, device=device)
    return (~may_hide.bool()).float().to(device)


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = NO_CLASS,
    may_hide: torch.Tensor | None = None,
    fp_share: float = 0.5,
) -> torch.Tensor:
    """Soft Dice over the foreground classes (1..C-1); helps when cracks are ~1-2 % of pixels.

    A class is scored only on crops whose data set labels it. ``fp_share`` != 0.5 makes it the
    Tversky index (Salehi et al. 2017): 2 x overlap / (2 x overlap + 2a FP + 2(1 - a) FN), which
    weighs a predicted pixel beside a crack (width) against a missed one.
    """
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    labelled = _labelled_samples(may_hide, logits.shape[0], num_classes, logits.device)[:, :, None, None]
    probs = logits.float().softmax(dim=1) * valid * labelled
    onehot = F.one_hot(target.clamp(max=num_classes - 1) * valid.squeeze(1), num_classes)
    onehot = onehot.permute(0, 3, 1, 2).float() * valid * labelled
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    if fp_share == 0.5:
        denom = probs.sum(dims) + onehot.sum(dims)
    else:  # false positives and negatives weighted apart
        false_pos, false_neg = probs.sum(dims) - inter, onehot.sum(dims) - inter
        denom = 2 * inter + 2 * fp_share * false_pos + 2 * (1 - fp_share) * false_neg
    dice = (2 * inter + 1.0) / (denom + 1.0)
    scored = labelled[:, 1:, 0, 0].amax(dim=0) > 0
    return 1 - dice[1:][scored].mean() if bool(scored.any()) else logits.sum() * 0.0


def label_skeletons(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, C, H, W) float: the one-pixel centreline of each foreground class's labels (class 0 empty)."""
    labels = target.detach().cpu().numpy()
    out = np.zeros((labels.shape[0], num_classes, *labels.shape[1:]), dtype=np.float32)
    for n, sample in enumerate(labels):
        for cls in range(1, num_classes):
            region = sample == cls
            if region.any():
                out[n, cls] = skeletonize(region)
    return torch.from_numpy(out).to(target.device)


def skeleton_recall_loss(
    logits: torch.Tensor, target: torch.Tensor, may_hide: torch.Tensor | None = None
) -> torch.Tensor:
    """Skeleton Recall (Kirchhoff et al., ECCV 2024): 1 - the share of the labels' centrelines
    that the predicted probability covers, per foreground class; keeps thin cracks connected."""
    num_classes = logits.shape[1]
    skeleton = label_skeletons(target, num_classes)
    skeleton *= _labelled_samples(may_hide, logits.shape[0], num_classes, logits.device)[:, :, None, None]
    probs = logits.float().softmax(dim=1)
    length = skeleton.sum(dim=(0, 2, 3))[1:]
    covered = (probs * skeleton).sum(dim=(0, 2, 3))[1:]
    present = length > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    return 1 - (covered[present] / length[present]).mean()


def segmentation_loss(
    outputs: tuple[torch.Tensor, ...], target: torch.Tensor, cfg: LossConfig, may_hide: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted sum: main OHEM CE + CE on each auxiliary head (+ Dice and Skeleton Recall on the main output)."""
    main, *aux = outputs
    loss = cfg.main_weight * ohem_cross_entropy(main, target, cfg.ohem_thresh, cfg.ohem_min_kept, may_hide=may_hide)
    for weight, logits in zip(cfg.aux_weights, aux, strict=False):
        loss = loss + weight * mean_nll(logits, target, may_hide)
    if cfg.dice_weight:
        loss = loss + cfg.dice_weight * dice_loss(main, target, may_hide=may_hide, fp_share=cfg.dice_fp_share)
    if cfg.skeleton_weight:
        loss = loss + cfg.skeleton_weight * skeleton_recall_loss(main, target, may_hide)
    return loss


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher || student) of the class distributions, averaged over the ``valid`` (N, H, W) pixels
    and scaled by T² (Hinton et al. 2015), so the term keeps its size whatever the temperature."""
    if not bool(valid.any()):
        return student.sum() * 0.0
    log_student = (student.float() / temperature).log_softmax(dim=1)
    log_teacher = (teacher.float() / temperature).log_softmax(dim=1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    return kl[valid].mean() * temperature**2
