"""MSAF properties that follow from its definition, for any weights."""

import pytest
import torch

from pipeline.model import MSAF


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights and BN statistics so identities cannot hold by accident of init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                values = (
                    torch.rand(tensor.shape, generator=gen) + 0.5
                    if "running_var" in name
                    else torch.randn(tensor.shape, generator=gen)
                )
                tensor.copy_(values)


@pytest.mark.parametrize("grids", [(4, 8, 16), (4, 8)])
@pytest.mark.parametrize("training", [False, True])
def test_equal_inputs_give_twice_x(grids, training):
    msaf = MSAF(16, r=4, grids=grids)
    _randomise(msaf)
    msaf.train(training)
    x = torch.randn(2, 16, 13, 21)
    torch.testing.assert_close(msaf(x, x.clone()), 2 * x)


def test_zeroed_final_bn_gives_sum():
    msaf = MSAF(8, grids=(4, 8, 16)).eval()
    _randomise(msaf)
    with torch.no_grad():
        for branch in [msaf.local_att, msaf.global_att, *msaf.context_att]:
            branch[-1].weight.zero_()
            branch[-1].bias.zero_()
    x, residual = torch.randn(1, 8, 9, 7), torch.randn(1, 8, 9, 7)
    torch.testing.assert_close(msaf(x, residual), x + residual)


def test_output_is_weighted_blend_of_inputs():
    """out = 2*x*w + 2*r*(1-w) with 0 < w < 1: out/2 lies between x and r element-wise."""
    msaf = MSAF(8).eval()
    _randomise(msaf, seed=3)
    x, residual = torch.randn(2, 8, 10, 10), torch.randn(2, 8, 10, 10)
    half = msaf(x, residual) / 2
    assert torch.all(half >= torch.minimum(x, residual) - 1e-6)
    assert torch.all(half <= torch.maximum(x, residual) + 1e-6)
    assert not torch.allclose(half, (x + residual) / 2)


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (3, 5), (15, 2), (17, 33)])
def test_any_spatial_size_smaller_than_grids(size):
    msaf = MSAF(8, grids=(4, 8, 16)).eval()
    x = torch.randn(1, 8, *size)
    assert msaf(x, torch.randn_like(x)).shape == x.shape


def test_gradients_reach_both_inputs():
    msaf = MSAF(8).train()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    residual = torch.randn(2, 8, 6, 6, requires_grad=True)
    msaf(x, residual).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert residual.grad is not None and residual.grad.abs().sum() > 0


def test_branch_count_and_parameters_follow_grids():
    c, r = 32, 4
    per_branch = (c * (c // r) + c // r) + 2 * (c // r) + ((c // r) * c + c) + 2 * c
    for grids in [(4, 8), (4, 8, 16)]:
        msaf = MSAF(c, r=r, grids=grids)
        assert len(msaf.context_att) == len(grids)
        assert sum(p.numel() for p in msaf.parameters()) == per_branch * (2 + len(grids))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        MSAF(4)(torch.zeros(1, 4, 3, 3), torch.zeros(1, 4, 3, 4))
