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
    crack = metrics.compute()["classes"]["crack"]
    assert crack["iou"] == pytest.approx(20 / 60)
    assert crack["precision"] == pytest.approx(0.5) and crack["recall"] == pytest.approx(0.5)
    assert crack["f1"] == pytest.approx(0.5) and crack["support"] == 40
    assert metrics.compute()["classes"]["bg"]["iou"] == pytest.approx(40 / 80)


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
    assert summary["classes"]["crack"]["f1"] == 0.0
    assert summary["classes"]["crack"]["tol_f1"] == pytest.approx(1.0)
    assert summary["fg_tol_f1"] == pytest.approx(1.0)


def test_no_prediction_scores_zero_not_nan():
    metrics = SegmentationMetrics(["bg", "crack"])
    metrics.update(np.zeros((10, 10), np.uint8), _line(3)[:10, :10].astype(np.uint8))
    crack = metrics.compute()["classes"]["crack"]
    assert crack["f1"] == 0.0 and crack["tol_f1"] == 0.0


def test_metrics_accumulate_over_images():
    metrics = SegmentationMetrics(["bg", "crack"], tolerance_px=2)
    metrics.update(_line(12).astype(np.uint8), _line(10).astype(np.uint8))  # within tolerance
    metrics.update(np.zeros((40, 40), np.uint8), _line(10).astype(np.uint8))  # missed entirely
    crack = metrics.compute()["classes"]["crack"]
    assert crack["tol_precision"] == pytest.approx(1.0) and crack["tol_recall"] == pytest.approx(0.5)
