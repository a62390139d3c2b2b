"""The training loss terms against direct computations."""

import torch
import torch.nn.functional as F

from pipeline.config import LossConfig
from pipeline.training.loss import dice_loss, ohem_cross_entropy, segmentation_loss


def _logits_for(target: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """2-class logits where p(true class) equals ``confidence`` per pixel."""
    logit = torch.log(confidence / (1 - confidence))
    sign = torch.where(target == 1, 1.0, -1.0)
    return torch.stack([-sign * logit / 2, sign * logit / 2], dim=1)


def test_ohem_keeps_only_hard_pixels():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    confidence = torch.full((1, 4, 4), 0.99)
    confidence[0, 0, :3] = torch.tensor([0.2, 0.5, 0.7])  # three hard pixels
    logits = _logits_for(target, confidence)
    loss = ohem_cross_entropy(logits, target, thresh=0.9, min_kept=2)
    expected = -torch.log(torch.tensor([0.2, 0.5, 0.7])).mean()
    torch.testing.assert_close(loss, expected)


def test_ohem_min_kept_extends_past_threshold_and_caps_at_pixel_count():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    confidence = torch.tensor([[[0.5, 0.95], [0.97, 0.99]]])
    logits = _logits_for(target, confidence)
    loss = ohem_cross_entropy(logits, target, thresh=0.9, min_kept=3)
    torch.testing.assert_close(loss, -torch.log(torch.tensor([0.5, 0.95, 0.97])).mean())
    everything = ohem_cross_entropy(logits, target, thresh=0.9, min_kept=10_000)
    torch.testing.assert_close(everything, F.cross_entropy(logits, target))


def test_ohem_ignores_ignore_index():
    target = torch.tensor([[[0, 255]]])
    logits = torch.tensor([[[[2.0, -5.0]], [[0.0, 5.0]]]])
    torch.testing.assert_close(ohem_cross_entropy(logits, target, 0.9, 1),
                               F.cross_entropy(logits[..., :1], target[..., :1]))


def test_dice_is_zero_for_a_perfect_confident_prediction_and_high_for_the_opposite():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:4] = 1
    perfect = F.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(perfect, target) < 1e-3
    assert dice_loss(-perfect, target) > 0.9


def test_weighted_sum_of_main_and_aux_terms():
    torch.manual_seed(0)
    target = torch.randint(0, 2, (2, 6, 6))
    main, aux1, aux2 = (torch.randn(2, 2, 6, 6) for _ in range(3))
    cfg = LossConfig(main_weight=0.6, aux_weights=(0.2, 0.2), ohem_min_kept=10_000, dice_weight=0.0)
    expected = 0.6 * F.cross_entropy(main, target) + 0.2 * F.cross_entropy(aux1, target) \
        + 0.2 * F.cross_entropy(aux2, target)
    torch.testing.assert_close(segmentation_loss((main, aux1, aux2), target, cfg), expected)
