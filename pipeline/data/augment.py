"""Random training crops with geometric and photometric augmentation (seeded, numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.config import AugmentConfig
from pipeline.data.labelled import IGNORE_INDEX, LabelledImage


def _random_crop(item: LabelledImage, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    image, labels = item.image, item.labels
    pad_h, pad_w = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
        labels = np.pad(labels, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
    top = int(rng.integers(0, image.shape[0] - size + 1))
    left = int(rng.integers(0, image.shape[1] - size + 1))
    return image[top:top + size, left:left + size], labels[top:top + size, left:left + size]


def _geometric(image: np.ndarray, labels: np.ndarray, aug: AugmentConfig,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if aug.hflip and rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if aug.vflip and rng.random() < 0.5:
        image, labels = image[::-1], labels[::-1]
    if aug.rot90:
        k = int(rng.integers(0, 4))
        image, labels = np.rot90(image, k), np.rot90(labels, k)
    return image, labels


def _photometric(image: np.ndarray, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    out = image.astype(np.float32)
    if aug.brightness:
        out *= rng.uniform(1 - aug.brightness, 1 + aug.brightness)
    if aug.contrast:
        mean = out.mean()
        out = (out - mean) * rng.uniform(1 - aug.contrast, 1 + aug.contrast) + mean
    if aug.saturation:
        gray = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        out = (out - gray[..., None]) * rng.uniform(1 - aug.saturation, 1 + aug.saturation) + gray[..., None]
    return np.clip(out, 0, 255)


def sample_batch(items: Sequence[LabelledImage], batch_size: int, crop: int, aug: AugmentConfig,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw a batch of augmented square crops.

    Returns:
        images float32 (N, crop, crop, 3) in 0..255 and labels int64 (N, crop, crop).
    """
    images = np.empty((batch_size, crop, crop, 3), dtype=np.float32)
    labels = np.empty((batch_size, crop, crop), dtype=np.int64)
    for i in range(batch_size):
        item = items[int(rng.integers(0, len(items)))]
        image, label = _random_crop(item, crop, rng)
        image, label = _geometric(image, label, aug, rng)
        images[i] = _photometric(image, aug, rng)
        labels[i] = label
    return images, labels
