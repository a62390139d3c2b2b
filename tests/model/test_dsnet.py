"""The DSNet-style network: reference sizes, shapes, train/eval outputs, typed presets."""

import pytest
import torch

from pipeline.model import PRESETS, DSNet, DSNetConfig, build_model, count_parameters


def test_dsnet_matches_reference_parameter_count():
    model = build_model("dsnet", 19)
    assert count_parameters(model, include_aux=False) == 6_755_539  # 6.76 M, as the paper's DSNet
    assert count_parameters(model) == 6_943_769  # 6.94 M with both auxiliary heads


def test_dsnet_base_is_the_wider_variant():
    assert round(count_parameters(build_model("dsnet-base", 19), include_aux=False) / 1e6, 1) == 37.5


@pytest.mark.parametrize("preset", ["dsnet-tiny", "dsnet"])
def test_output_shape_equals_odd_input_shape(preset):
    model = build_model(preset, 3).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 250, 333))
    assert out.shape == (1, 3, 250, 333)


@pytest.mark.parametrize("size", [(32, 32), (61, 45), (8, 200)])
def test_tiny_handles_small_and_thin_inputs(size):
    model = build_model("dsnet-tiny", 2).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, *size)).shape == (1, 2, *size)


def test_train_mode_returns_main_and_two_aux_eval_mode_one_tensor():
    model = build_model("dsnet-tiny", 4)
    x = torch.randn(2, 3, 64, 96)
    outputs = model.train()(x)
    assert isinstance(outputs, tuple) and len(outputs) == 3
    assert all(o.shape == (2, 4, 64, 96) for o in outputs)
    assert not torch.equal(outputs[0], outputs[1])
    single = model.eval()(x)
    assert isinstance(single, torch.Tensor) and single.shape == (2, 4, 64, 96)


def test_presets_are_typed_configs_not_name_substrings():
    assert PRESETS["dsnet"].width == 32 and PRESETS["dsnet-base"].width == 64
    assert PRESETS["dsnet-base"].context_blocks == 3 and PRESETS["dsnet-base"].detail_blocks == 3
    model = build_model("dsnet", 2, grids=(4, 8), head_width=64)
    assert model.config.grids == (4, 8) and model.config.head_width == 64
    assert len(model.fuse3.context_att) == 2
    assert DSNet(DSNetConfig(width=8, num_classes=5)).config.num_classes == 5


def test_bad_preset_or_override_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model preset 'dsnet-huge'"):
        build_model("dsnet-huge", 2)
    with pytest.raises(ValueError, match="unknown model override"):
        build_model("dsnet", 2, planes=64)
    with pytest.raises(ValueError):
        build_model("dsnet", 2, width=0)


def test_mfacb_and_spaspp_share_one_atrous_chain_with_the_checkpoint_names_kept():
    from pipeline.model.blocks import MFACB, SPASPP, AtrousChain

    chain = AtrousChain(4, 6, (1, 2, 3))
    outputs = chain(torch.randn(1, 4, 20, 20))
    assert [tuple(o.shape) for o in outputs] == [(1, 6, 20, 20)] * 3
    assert [conv[0].dilation for conv in chain] == [(1, 1), (2, 2), (3, 3)]
    mfacb, spaspp = MFACB(4, 6, 8, (2, 2, 2)), SPASPP(4, 6, 8)
    assert isinstance(mfacb.chain, AtrousChain) and isinstance(spaspp.chain, AtrousChain)
    assert "chain.0.0.weight" in mfacb.state_dict() and "chain.3.1.running_var" in spaspp.state_dict()


@pytest.mark.parametrize("size", [(64, 64), (67, 93)])
def test_refinement_branch_starts_as_the_plain_upsampling(size):
    """refine_width adds a full-resolution branch whose output conv starts at zero: same logits as
    the network without it (same weights), at the input's size, also for odd sizes."""
    torch.manual_seed(0)
    refined = build_model("dsnet-tiny", 3, refine_width=4).eval()
    plain = build_model("dsnet-tiny", 3).eval()
    plain.load_state_dict({k: v for k, v in refined.state_dict().items() if not k.startswith("refine.")})
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = refined(x)
        assert out.shape == (2, 3, *size)
        assert torch.allclose(out, plain(x), atol=1e-6)
    assert count_parameters(refined) - count_parameters(plain) < 2_000  # a light branch


def test_refinement_draws_a_one_pixel_line_that_quarter_resolution_logits_smear():
    """Given the best 1/4-resolution logits of an image with 1-px lines (their area average), plain
    bilinear upsampling marks each line 2+ px wide; the full-resolution branch, fitted on that image,
    puts them back at 1 px: the decoder's resolution, not its knowledge, limits the width."""
    from pipeline.model.blocks import FullResRefiner

    image = torch.full((1, 3, 64, 64), 0.5)
    truth = torch.zeros(1, 64, 64, dtype=torch.long)
    for col in (13, 30, 47):
        image[..., col] = -1.5
        truth[..., col] = 1
    share = torch.nn.functional.avg_pool2d(truth[:, None].float(), 4).clamp(1e-3, 1 - 1e-3)
    coarse = torch.cat((torch.log(1 - share), torch.log(share)), dim=1) + 3.5 * torch.tensor([0.0, 1.0])[:, None, None]
    upsampled = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear").argmax(1)
    plain_width = (upsampled == 1).sum(-1).float().mean().item() / 3

    torch.manual_seed(0)
    refiner = FullResRefiner(4, 2)
    refiner.zero_output()
    optimizer = torch.optim.Adam(refiner.parameters(), lr=0.02)
    for _ in range(120):
        loss = torch.nn.functional.cross_entropy(refiner.train()(image, coarse), truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        refined = refiner.eval()(image, coarse).argmax(1)
    refined_width = (refined == 1).sum(-1).float().mean().item() / 3
    assert plain_width >= 3.0, plain_width  # a threshold that finds every line pixel draws them 4 px wide
    assert abs(refined_width - 1.0) < 0.2 and (refined == truth).float().mean() > 0.99, refined_width
