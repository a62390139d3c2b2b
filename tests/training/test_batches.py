"""Crops are drawn ahead by threads, in order, and the stream does not depend on the thread count."""

import numpy as np

from pipeline.config import AugmentConfig
from pipeline.data import CropSampler, LabelledImage
from pipeline.training.trainer import training_batches


def _sampler() -> CropSampler:
    rng = np.random.default_rng(1)
    items = [
        LabelledImage(
            f"i{k}", rng.integers(0, 255, (70, 90, 3), dtype=np.uint8), (rng.random((70, 90)) < 0.05).astype(np.uint8)
        )
        for k in range(3)
    ]
    return CropSampler({"s": items}, 32, AugmentConfig(footprint=0.5), focus=0.5)


def test_each_step_draws_its_own_seeded_batch_whatever_the_threads():
    sampler = _sampler()
    one = list(training_batches(sampler, 4, 9, 7, threads=1))
    three = list(training_batches(sampler, 4, 9, 7, threads=3))
    assert len(one) == len(three) == 7
    for (a_img, a_lab, *_), (b_img, b_lab, *_) in zip(one, three, strict=True):
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_lab, b_lab)
    step5 = sampler.batch(4, np.random.default_rng([9, 5]))
    np.testing.assert_array_equal(one[5][0], step5[0])
    assert not np.array_equal(one[4][0], one[5][0])
