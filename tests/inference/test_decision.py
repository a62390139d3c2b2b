"""The decision rule shared by evaluation and surveys: argmax or calibrated thresholds."""

import numpy as np
import pytest
import torch

from pipeline.data import LabelledImage
from pipeline.evaluate import calibrate, evaluate_groups
from pipeline.inference.decision import decide, threshold_ids


def test_threshold_turns_a_thin_crack_below_one_half_into_crack():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.7, 0.05, 0.25], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]]).T  # (C=3, 4 px)
    assert decide(probs).tolist() == [0, 0, 1, 2]
    assert decide(probs, [(1, 0.3)]).tolist() == [1, 0, 1, 1]  # p(crack) >= 0.3 wins; else argmax of the rest
    assert decide(probs, [(1, 0.6)]).tolist() == [0, 0, 2, 2]  # a strict threshold hands pixels to the others
    assert decide(probs, [(1, 0.3), (2, 0.25)]).tolist() == [1, 2, 1, 2]  # both pass: the more probable wins
    assert threshold_ids(["background", "crack", "joint"], {"crack": 0.35}) == [(1, 0.35)]


def _scored(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, LabelledImage]:
    return probs.astype(np.float16), LabelledImage("x", np.zeros((*labels.shape, 3), np.uint8), labels)


def test_calibration_finds_the_threshold_that_recovers_a_faint_crack():
    labels = np.zeros((40, 40), np.uint8)
    labels[20, 5:35] = 1  # a 1-px crack
    crack = np.full((40, 40), 0.05)
    crack[20, 5:35] = 0.33  # the model sees it, but below 0.5
    crack[5, 5:15] = 0.22  # a fainter false streak
    probs = np.stack([1 - crack, crack])
    threshold, score = calibrate({"a": [_scored(probs, labels)]}, cls=1, tolerance_px=0)
    assert threshold in (0.25, 0.3) and score == pytest.approx(1.0)  # nearest to 0.5 among the best
    assert threshold == 0.3
    summary = evaluate_groups({"a": [_scored(probs, labels)]}, ["background", "crack"], 0, {"crack": threshold})
    assert summary.classes["crack"].f1 == pytest.approx(1.0) and summary.score == pytest.approx(1.0)
    argmax = evaluate_groups({"a": [_scored(probs, labels)]}, ["background", "crack"], 0)
    assert argmax.classes["crack"].recall == 0
    assert summary.classes["crack"].median_width_px == pytest.approx(1.0)


def test_calibration_averages_over_data_sets():
    """Set a wants a low threshold, set b a high one: the mean tolerant F1 picks between them."""
    labels = np.zeros((30, 30), np.uint8)
    labels[10, 2:28] = 1
    low = np.full((30, 30), 0.02)
    low[10, 2:28] = 0.21
    high = np.full((30, 30), 0.02)
    high[10, 2:28] = 0.8
    high[20, 2:28] = 0.45  # false streak only a high threshold drops
    groups = {"a": [_scored(np.stack([1 - low, low]), labels)], "b": [_scored(np.stack([1 - high, high]), labels)]}
    threshold, score = calibrate(groups, cls=1, tolerance_px=0)
    assert threshold == 0.2 and score == pytest.approx((1.0 + 2 / 3) / 2)  # a perfect, b F1 2/3
    summary = evaluate_groups(groups, ["background", "crack"], 0, {"crack": threshold}, ["crack"])
    assert summary.sets["a"].score == pytest.approx(1.0)
    assert summary.sets["b"].score == pytest.approx(2 / 3)
    assert summary.score == pytest.approx(score)


def _calibrate_by_brute_force(groups, cls, tolerance_px, others, grid):
    """The definition: decide() with each threshold, tolerant F1 per group, mean, ties nearest 0.5."""
    from scipy.ndimage import distance_transform_edt

    scores = []
    for threshold in grid:
        rule = [*(o for o in others if o[0] != cls), (cls, threshold)]
        per_group = []
        for scored in groups.values():
            hit_pred = n_pred = hit_true = n_true = 0
            for probs, item in scored:
                valid = item.labels != 255
                truth = (item.labels == cls) & valid
                pred = (decide(torch.from_numpy(probs.astype(np.float32)), rule).numpy() == cls) & valid
                n_pred, n_true = n_pred + int(pred.sum()), n_true + int(truth.sum())
                if truth.any() and pred.any():
                    hit_pred += int((distance_transform_edt(~truth)[pred] <= tolerance_px).sum())
                    hit_true += int((distance_transform_edt(~pred)[truth] <= tolerance_px).sum())
            if n_true:
                p, r = (hit_pred / n_pred if n_pred else 0.0), hit_true / n_true
                per_group.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
        scores.append(np.mean(per_group))
    best = max(range(len(grid)), key=lambda i: (round(scores[i], 12), -abs(grid[i] - 0.5)))
    return grid[best], scores[best]


@pytest.mark.parametrize("others", [[], [(2, 0.3)], [(2, 0.6)]])
def test_fast_calibration_equals_deciding_with_every_threshold(others):
    """calibrate() decides each image once, not once per threshold; it must pick exactly what
    deciding with every threshold picks, also when another class is thresholded (the two compete)."""
    rng = np.random.default_rng(5)
    groups = {}
    for name in ("a", "b"):
        scored = []
        for _ in range(3):
            logits = rng.normal(size=(3, 24, 24)) + np.array([1.5, 0.0, -0.5])[:, None, None]
            probs = np.exp(logits) / np.exp(logits).sum(0)
            labels = rng.choice([0, 1, 2, 255], size=(24, 24), p=[0.7, 0.15, 0.1, 0.05]).astype(np.uint8)
            scored.append(_scored(probs, labels))
        groups[name] = scored
    grid = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    assert calibrate(groups, 1, 1, others, grid) == pytest.approx(_calibrate_by_brute_force(groups, 1, 1, others, grid))


def _scored_argmax(probs: torch.Tensor, thresholds) -> torch.Tensor:
    """The rule as first written: hits score 1 + p, misses -1, then the argmax (first index on ties)."""
    scores = probs.clone()
    for cls, threshold in thresholds:
        scores[cls] = torch.where(probs[cls] >= threshold, 1.0 + probs[cls], -1.0)
    return scores.argmax(dim=0)


@pytest.mark.parametrize(
    "thresholds",
    [(), ((1, 0.45),), ((2, 0.3),), ((1, 0.4), (2, 0.4)), ((2, 0.2), (1, 0.25)), ((0, 0.5), (1, 0.5), (2, 0.5))],
)
def test_single_pass_decision_equals_the_scored_argmax_with_ties_and_edges(thresholds):
    from pipeline.inference.decision import decide_with_top

    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 64, 64, generator=generator).softmax(dim=0)
    probs[:, :4] = torch.tensor([0.4, 0.4, 0.2])[:, None, None]  # ties between classes
    probs[:, 4:8] = torch.tensor([0.3, 0.45, 0.25])[:, None, None]  # exactly at a threshold
    probs[:, 8:12] = torch.tensor([0.2, 0.4, 0.4])[:, None, None]  # two thresholded classes tied
    ids, top = decide_with_top(probs, thresholds)
    expected = _scored_argmax(probs, thresholds)
    assert torch.equal(ids, expected)
    assert torch.equal(top, probs.gather(0, expected.unsqueeze(0))[0])  # the chosen class's probability, exactly


@pytest.mark.parametrize("thresholds", [(), ((1, 0.45),), ((2, 0.2), (1, 0.25)), ((0, 0.5), (1, 0.5), (2, 0.5))])
def test_the_devices_operations_and_numpys_decide_and_quantise_alike_bit_for_bit(thresholds):
    """A CPU decides in NumPy, a GPU with the same rule in torch: both run here on the same
    probabilities (torch's on CPU tensors) and must agree exactly, ids, probability and confidence,
    including at the threshold (compared in float32 by both) and on ties."""
    from pipeline.inference.blend import confidence_of
    from pipeline.inference.decision import decide_planes

    generator = torch.Generator().manual_seed(3)
    probs = (torch.randn(3, 96, 80, generator=generator) * 2).softmax(dim=0)
    below, at, above = (torch.nextafter(torch.tensor(0.45), torch.tensor(d)) for d in (0.0, 0.45, 1.0))
    probs[1, :4], probs[1, 4:8], probs[1, 8:12] = below, at, above  # 0.45 is not a float32: both round it alike
    probs[:, 12:16] = torch.tensor([0.4, 0.2, 0.4])[:, None, None]  # ties
    results = []
    for as_array in (lambda t: t.clone(), lambda t: t.numpy().copy()):
        ids, top = as_array(torch.zeros(96, 80, dtype=torch.uint8)), as_array(torch.zeros(96, 80))
        decide_planes(as_array(probs), thresholds, ids, top)
        results.append((np.asarray(ids), np.asarray(top).copy(), np.asarray(confidence_of(top)).astype(np.uint8)))
    (torch_ids, torch_top, torch_confidence), (numpy_ids, numpy_top, numpy_confidence) = results
    np.testing.assert_array_equal(torch_ids, numpy_ids)
    np.testing.assert_array_equal(torch_top.view(np.int32), numpy_top.view(np.int32))
    np.testing.assert_array_equal(torch_confidence, numpy_confidence)
    assert torch.equal(torch.from_numpy(numpy_ids).long(), _scored_argmax(probs, thresholds))
    if thresholds == ((1, 0.45),):
        assert (numpy_ids[:4] != 1).all() and (numpy_ids[4:12] == 1).all()
