"""Batch norms folded into convolutions: the same answer up to float rounding, the original kept."""

import torch
from torch import nn

from pipeline.inference.fold import fold_batch_norms
from pipeline.model import build_model


def _realistic_norms(model: nn.Module, seed: int) -> None:
    """Batch norms with scales and shifts like a trained network's (activations stay bounded)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            channels = norm.num_features
            norm.weight.copy_(1 + 0.2 * torch.randn(channels, generator=gen))
            norm.bias.copy_(0.2 * torch.randn(channels, generator=gen))
            norm.running_mean.copy_(0.2 * torch.randn(channels, generator=gen))
            norm.running_var.copy_(0.5 + torch.rand(channels, generator=gen))


def test_folded_network_answers_as_the_trained_one_and_leaves_it_untouched():
    model = build_model("dsnet-tiny", 3).eval()
    _realistic_norms(model, seed=7)  # not the identity norms of a fresh network: folding would be trivial
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(image)
        folded = fold_batch_norms(model)
        after = folded(image)
        again = model(image)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    left = [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) > 50 and len(left) == 2  # the heads' input norms follow no convolution
    assert torch.equal(again, before)  # the caller's model is not changed
    scale = before.abs().max()  # float rounding through ~40 layers, relative to the logits' range
    assert scale > 1 and (after - before).abs().max() < 1e-4 * scale, ((after - before).abs().max(), scale)
    assert not torch.equal(after, before)  # it is a different computation, not the same modules
    assert not folded.training


def test_a_norm_without_running_statistics_is_not_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    assert isinstance(fold_batch_norms(model)[1], nn.BatchNorm2d)
