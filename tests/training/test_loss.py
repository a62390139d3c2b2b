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
    torch.testing.assert_close(
        ohem_cross_entropy(logits, target, 0.9, 1), F.cross_entropy(logits[..., :1], target[..., :1])
    )


def test_dice_is_zero_for_a_perfect_confident_prediction_and_high_for_the_opposite():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:4] = 1
    perfect = F.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(perfect, target) < 1e-3
    assert dice_loss(-perfect, target) > 0.9


def test_tversky_share_weighs_a_too_wide_prediction_against_a_too_narrow_one():
    """At 0.5 it is Dice; at 0.8 a prediction one pixel wider than its 2-px line costs more than one
    a pixel narrower, at 0.2 less."""
    target = torch.zeros(1, 12, 12, dtype=torch.long)
    target[0, 4:6] = 1  # a line two rows wide
    wide, narrow = torch.zeros(1, 12, 12, dtype=torch.long), torch.zeros(1, 12, 12, dtype=torch.long)
    wide[0, 4:7], narrow[0, 4:5] = 1, 1

    def logits(mask):
        return F.one_hot(mask, 2).permute(0, 3, 1, 2).float() * 50

    for share in (0.5, 0.5 + 1e-9):  # the Dice expression and the Tversky one agree at 0.5
        torch.testing.assert_close(dice_loss(logits(wide), target, fp_share=share), dice_loss(logits(wide), target))
    assert dice_loss(logits(wide), target, fp_share=0.8) > dice_loss(logits(narrow), target, fp_share=0.8)
    assert dice_loss(logits(wide), target, fp_share=0.2) < dice_loss(logits(narrow), target, fp_share=0.2)


def test_weighted_sum_of_main_and_aux_terms():
    torch.manual_seed(0)
    target = torch.randint(0, 2, (2, 6, 6))
    main, aux1, aux2 = (torch.randn(2, 2, 6, 6) for _ in range(3))
    cfg = LossConfig(main_weight=0.6, aux_weights=(0.2, 0.2), ohem_min_kept=10_000, dice_weight=0.0)
    expected = (
        0.6 * F.cross_entropy(main, target) + 0.2 * F.cross_entropy(aux1, target) + 0.2 * F.cross_entropy(aux2, target)
    )
    torch.testing.assert_close(segmentation_loss((main, aux1, aux2), target, cfg), expected)


def _probs_logits(probs: list[list[float]]) -> torch.Tensor:
    """(N, C, 1, 1) logits whose softmax is ``probs`` per sample."""
    return torch.log(torch.tensor(probs)).unsqueeze(-1).unsqueeze(-1)


def test_partial_labels_let_background_hide_a_class_its_set_never_labels():
    from pipeline.training.loss import pixel_nll

    logits = _probs_logits([[0.5, 0.1, 0.4], [0.5, 0.1, 0.4], [0.2, 0.7, 0.1]])
    target = torch.tensor([0, 0, 1]).view(3, 1, 1)
    may_hide = torch.tensor([[False, False, True], [False, False, False], [False, False, True]])
    nll = pixel_nll(logits, target, may_hide).flatten()
    # set without joint labels: background means "background or joint"; a labelling set: plain CE;
    # a crack pixel is a crack pixel in every set.
    torch.testing.assert_close(nll, -torch.log(torch.tensor([0.9, 0.5, 0.7])))
    torch.testing.assert_close(pixel_nll(logits, target, None).flatten(), -torch.log(torch.tensor([0.5, 0.5, 0.7])))
    ignored = pixel_nll(logits, torch.tensor([255, 0, 1]).view(3, 1, 1), may_hide).flatten()
    assert ignored[0] == 0


def test_dice_and_skeleton_terms_skip_classes_a_crop_does_not_label():
    from pipeline.training.loss import skeleton_recall_loss

    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 3, 1:7] = 1  # a 6-px crack in both crops, no joint anywhere
    onehot = F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    logits = onehot * 50
    logits[0, 2] = 100  # crop 0 predicts joint everywhere: its set never labels joints
    may_hide = torch.tensor([[False, False, True], [False, False, True]])
    # crack: 6 of 12 true pixels found, nothing else predicted -> 1 - (2*6+1)/(6+12+1); the joint
    # predicted all over crop 0 is not scored (scoring it would add a term near 1).
    torch.testing.assert_close(dice_loss(logits, target, may_hide=may_hide), torch.tensor(1 - 13 / 19))
    assert dice_loss(logits, target) > 0.6
    ok = onehot * 50
    assert dice_loss(ok, target, may_hide=may_hide) < 1e-3
    # Skeleton Recall: probability 0.5 on the whole centreline -> loss 0.5; a perfect one -> 0.
    half = torch.zeros(2, 3, 8, 8)
    half[:, 1][target == 1] = 0.0
    half[:, 0] = torch.where(target == 1, 0.0, 10.0)
    half[:, 2] = -50.0
    torch.testing.assert_close(skeleton_recall_loss(half, target, may_hide), torch.tensor(0.5))
    assert skeleton_recall_loss(ok, target, may_hide) < 1e-6
    # the whole term is used by segmentation_loss when weighted
    cfg = LossConfig(dice_weight=0, skeleton_weight=1.0, main_weight=0, aux_weights=(0, 0))
    torch.testing.assert_close(segmentation_loss((half,), target, cfg, may_hide), torch.tensor(0.5))
