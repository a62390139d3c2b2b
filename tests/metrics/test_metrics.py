"""Metrics against values worked out by hand."""

import numpy as np
import pytest

from pipeline.metrics import SegmentationMetrics, confusion_matrix, tolerant_counts


def test_confusion_matrix_counts_and_ignores():
    target = np.array([[0, 0, 1, 1, 255]])
    pred = np.array([[0, 1, 1, 0, 1]])
    np.testing.assert_array_equal(confusion_matrix(pred, target, 2), [[1, 1], [1, 1]])


def test_per_class_metrics_exact():
    target = np.zeros((10, 10), np.uint8)
    target[:, :4] = 1  # 40 crack pixels
    pred = np.zeros((10, 10), np.uint8)
    pred[:, 2:6] = 1  # 40 predicted, 20 overlap
    metrics = SegmentationMetrics(["bg", "crack"], tolerance_px=0)
    metrics.update(pred, target)
    crack = metrics.compute().classes["crack"]
    assert crack.iou == pytest.approx(20 / 60)
    assert crack.precision == pytest.approx(0.5) and crack.recall == pytest.approx(0.5)
    assert crack.f1 == pytest.approx(0.5) and crack.support == 40
    assert metrics.compute().classes["bg"].iou == pytest.approx(40 / 80)


def _line(col: int) -> np.ndarray:
    mask = np.zeros((40, 40), bool)
    mask[5:35, col] = True
    return mask


def test_tolerant_f1_accepts_two_pixel_offsets_only():
    truth = _line(10)
    assert tolerant_counts(_line(12), truth, 2).tolist() == [30, 30, 30, 30]
    assert tolerant_counts(_line(13), truth, 2).tolist() == [0, 30, 0, 30]
    metrics = SegmentationMetrics(["bg", "crack"], tolerance_px=2)
    metrics.update(_line(12).astype(np.uint8), truth.astype(np.uint8))
    summary = metrics.compute()
    assert summary.classes["crack"].f1 == 0.0
    assert summary.classes["crack"].tol_f1 == pytest.approx(1.0)
    assert summary.fg_tol_f1 == pytest.approx(1.0)


def test_no_prediction_scores_zero_not_nan():
    metrics = SegmentationMetrics(["bg", "crack"])
    metrics.update(np.zeros((10, 10), np.uint8), _line(3)[:10, :10].astype(np.uint8))
    crack = metrics.compute().classes["crack"]
    assert crack.f1 == 0.0 and crack.tol_f1 == 0.0


def test_metrics_accumulate_over_images():
    metrics = SegmentationMetrics(["bg", "crack"], tolerance_px=2)
    metrics.update(_line(12).astype(np.uint8), _line(10).astype(np.uint8))  # within tolerance
    metrics.update(np.zeros((40, 40), np.uint8), _line(10).astype(np.uint8))  # missed entirely
    crack = metrics.compute().classes["crack"]
    assert crack.tol_precision == pytest.approx(1.0) and crack.tol_recall == pytest.approx(0.5)


def test_component_widths_are_pixels_over_centreline_length():
    from pipeline.metrics import component_widths

    mask = np.zeros((60, 60), bool)
    mask[10, 5:45] = True  # 1 px wide, 40 long
    mask[30:33, 5:45] = True  # 3 px wide
    mask[50, 50:53] = True  # a speck: too short to measure
    widths = sorted(component_widths(mask))
    assert len(widths) == 2 and widths[0] == pytest.approx(1.0)
    assert widths[1] == pytest.approx(3 * 40 / len(range(5, 45)), rel=0.1)


def test_confusion_shares_say_how_often_a_class_is_called_another():
    metrics = SegmentationMetrics(["background", "crack", "joint"], width_classes=[1])
    target = np.array([[2, 2, 2, 2], [0, 1, 1, 0]], np.uint8)
    pred = np.array([[2, 2, 2, 1], [0, 1, 1, 0]], np.uint8)
    metrics.update(pred, target)
    summary = metrics.compute()
    assert summary.classes["joint"].predicted_as == {"background": 0.0, "crack": 0.25}
    assert (summary.classes["crack"].predicted_as or {})["joint"] == 0.0
