"""Footprint-edge augmentation: crops look like survey tiles on the orthomosaic's edge."""

import numpy as np
import pytest
import torch

from pipeline.class_ids import NO_CLASS
from pipeline.config import AugmentConfig
from pipeline.data import CropSampler, LabelledImage
from pipeline.data.augment import footprint_valid, with_footprint
from pipeline.inference.fill import mirror_fill


def test_footprint_cuts_leave_most_of_the_crop_and_are_seeded():
    outside = [1 - footprint_valid(128, np.random.default_rng(seed)).mean() for seed in range(200)]
    assert min(outside) > 0.0 and max(outside) < 0.75  # every crop is cut; 5-45 % across per cut, at most two
    assert 0.1 < np.mean(outside) < 0.35
    again = [footprint_valid(64, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(*again)


def test_edge_is_filled_exactly_as_inference_fills_it_and_its_labels_are_ignored():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (64, 64, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (64, 64)).astype(np.int64)
    valid = np.zeros((64, 64), bool)
    valid[:, 20:] = True
    filled, kept = with_footprint(image, labels, valid)
    np.testing.assert_array_equal(filled[valid], image[valid])
    np.testing.assert_array_equal(kept[valid], labels[valid])
    assert (kept[~valid] == NO_CLASS).all()
    expected = (
        mirror_fill(torch.from_numpy(image.transpose(2, 0, 1).copy()), valid, torch.zeros(3)).numpy().transpose(1, 2, 0)
    )
    np.testing.assert_array_equal(filled, expected)
    np.testing.assert_array_equal(filled[:, 19], image[:, 21])  # mirrored across the edge: no step to learn


@pytest.mark.parametrize("share, expected", [(0.0, 0), (1.0, 12)])
def test_sampler_cuts_the_configured_share_of_crops(share, expected):
    rng = np.random.default_rng(3)
    item = LabelledImage("a", rng.integers(0, 255, (80, 80, 3), dtype=np.uint8), np.zeros((80, 80), np.uint8))
    aug = AugmentConfig(hflip=False, vflip=False, rot90=False, brightness=0, contrast=0, saturation=0, footprint=share)
    labels = CropSampler({"s": [item]}, 48, aug).batch(12, np.random.default_rng(0)).labels
    assert sum(bool((crop == NO_CLASS).any()) for crop in labels) == expected
