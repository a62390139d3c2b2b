"""Multi-scale inference: what the views are, that their mean is computed as stated, and that one view
is exactly the single-pass answer the engine gave before views existed."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.inference.predict import averaged_probabilities, normalise, passes_of, predict_probabilities
from pipeline.inference.runner import TileRunner
from pipeline.inference.scales import check_scales, parse_scales, scales_key, view_shape

MEAN, STD = (120.0, 110.0, 100.0), (40.0, 40.0, 40.0)


def _conv_model() -> nn.Module:
    """3x3 context, so a view's answer depends on the scale it is seen at."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 3, 3, padding=1)
    with torch.no_grad():
        model.weight.mul_(3)
    return model.eval()


def test_views_are_parsed_sorted_and_checked():
    assert parse_scales("2,1") == (1.0, 2.0)
    assert parse_scales("1") == (1.0,)
    assert parse_scales("1, 1.5,2") == (1.0, 1.5, 2.0)
    assert scales_key((1.0, 1.5, 2.0)) == "1,1.5,2"
    assert view_shape((256, 200), 1.5) == (384, 300)
    assert [passes_of(8, s) for s in (1.0, 1.5, 2.0, 3.0, 0.5)] == [8, 2, 2, 1, 8]  # divisors of 8, <= 8 px
    assert passes_of(6, 2.0) == 1 and passes_of(16, 2.0) == 4
    for text, message in [
        ("1,a", "numbers separated by commas"),
        ("1,8", "within 0.5-4, got 8"),
        ("0.1", "within 0.5-4, got 0.1"),
        ("2,2", "listed twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_scales(text)
    with pytest.raises(ValueError, match="at least one view"):
        check_scales(())


def test_one_view_is_the_plain_softmax_bit_for_bit_and_flips_the_mean_as_before():
    model = _conv_model()
    inputs = torch.randn(2, 3, 24, 30, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain = model(inputs).softmax(dim=1)
        torch.testing.assert_close(averaged_probabilities(model, inputs), plain, rtol=0, atol=0)
        before = (plain + model(inputs.flip(-1)).softmax(dim=1).flip(-1)) / 2  # the runner's flip TTA as written
        torch.testing.assert_close(averaged_probabilities(model, inputs, flips=True), before, rtol=0, atol=0)


def test_two_views_are_the_mean_of_the_tile_and_its_2x_enlargement_pooled_back():
    model = _conv_model()
    inputs = torch.randn(2, 3, 24, 30, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        one = model(inputs).softmax(dim=1)
        enlarged = F.interpolate(inputs, size=(48, 60), mode="bicubic", align_corners=False)
        two = F.avg_pool2d(model(enlarged).softmax(dim=1), 2)  # each tile pixel: the mean of its 2x2 view pixels
        both = averaged_probabilities(model, inputs, (1.0, 2.0))
        torch.testing.assert_close(both, (one + two) / 2, rtol=0, atol=1e-6)
        assert (both - one).abs().max() > 0.01  # the second view changes the answer
        torch.testing.assert_close(both.sum(dim=1), torch.ones(2, 24, 30), rtol=0, atol=1e-5)
        reduced = averaged_probabilities(model, inputs, (0.5,))
        half = F.interpolate(inputs, size=(12, 15), mode="bicubic", align_corners=False)
        back = F.interpolate(model(half).softmax(dim=1), size=(24, 30), mode="bilinear", align_corners=False)
        torch.testing.assert_close(reduced, back, rtol=0, atol=1e-6)


def test_a_survey_tile_and_an_evaluated_photo_get_the_same_views():
    """Calibration and validation (whole photos) and the survey (tiles) average the same views, so a
    threshold calibrated on photos is the one the survey's tiles need."""
    model = _conv_model()
    image = np.random.default_rng(3).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    runner = TileRunner(model, MEAN, STD, torch.device("cpu"), 2, (32, 40), scales=(1.0, 2.0))
    photo = predict_probabilities(model, image, MEAN, STD, torch.device("cpu"), (1.0, 2.0))
    np.testing.assert_allclose(runner.predict(image[None])[0], photo, rtol=0, atol=1e-6)
    with torch.inference_mode():
        single = model(normalise(torch.from_numpy(image)[None], MEAN, STD)).softmax(dim=1)[0].numpy()
    assert np.abs(photo - single).max() > 0.01
