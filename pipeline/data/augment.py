"""Random training crops with geometric and photometric augmentation (seeded, numpy only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from pipeline.class_ids import NO_CLASS
from pipeline.config import AugmentConfig
from pipeline.data.labelled import LabelledImage
from pipeline.raster.luminance import LUMA


def _random_crop(
    item: LabelledImage,
    size: int,
    rng: np.random.Generator,
    around: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop at a random place, or one holding pixel ``around`` (away from its edges)."""
    image, labels = item.image, item.labels
    pad_h, pad_w = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
        labels = np.pad(labels, ((0, pad_h), (0, pad_w)), constant_values=NO_CLASS)
    max_top, max_left = image.shape[0] - size, image.shape[1] - size
    if around is None:
        top, left = int(rng.integers(0, max_top + 1)), int(rng.integers(0, max_left + 1))
    else:
        margin = size // 8
        top = int(np.clip(around[0] - rng.integers(margin, size - margin), 0, max_top))
        left = int(np.clip(around[1] - rng.integers(margin, size - margin), 0, max_left))
    return image[top : top + size, left : left + size], labels[top : top + size, left : left + size]


def resample_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Class ids resampled to ``shape`` (rows, cols) so thin classes survive a shrink.

    Each class's coverage is area-averaged onto the new grid; a pixel takes the non-background
    class covering the most of it when that covers at least a third of it (a 1-px crack halved is
    still a 1-px crack, not a broken dotted line), else the class covering most of it.
    Ignored pixels (``NO_CLASS``) stay ignored where they cover at least half the new pixel.
    """
    from PIL import Image

    rows, cols = shape
    if labels.shape == shape:
        return labels.copy()
    ids = [int(v) for v in np.unique(labels)]
    method = Image.Resampling.BOX if rows < labels.shape[0] else Image.Resampling.BILINEAR
    coverage = np.stack(
        [
            np.asarray(Image.fromarray((labels == v).astype(np.float32), mode="F").resize((cols, rows), method))
            for v in ids
        ]
    )
    ids_arr = np.array(ids)
    out = ids_arr[coverage.argmax(0)].astype(labels.dtype)
    foreground = [i for i, v in enumerate(ids) if v not in (0, NO_CLASS)]
    if foreground:
        fg = coverage[foreground]
        best = fg.argmax(0)
        strong = fg.max(0) >= 1.0 / 3.0
        out = np.where(strong, ids_arr[foreground][best], out).astype(labels.dtype)
    if NO_CLASS in ids:
        out[coverage[ids.index(NO_CLASS)] >= 0.5] = NO_CLASS
    return out


def _rescaled(
    item: LabelledImage, size: int, factor: float, rng: np.random.Generator, around: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """A crop of ``size / factor`` source pixels resized to size x size: the ground seen at another GSD
    (factor > 1 enlarges, as a closer flight; < 1 shrinks, as a higher one)."""
    source = max(8, round(size / factor))
    image, labels = _random_crop(item, source, rng, around)
    return resize_pair(image, labels, (size, size))


def resize_pair(image: np.ndarray, labels: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and its labels brought to ``shape`` (rows, cols): the same ground at another GSD.
    The image is area-averaged when shrinking and bicubic when enlarging; labels follow with ``resample_labels``."""
    from PIL import Image

    rows, cols = shape
    if image.shape[:2] == shape:
        return image.copy(), labels.copy()  # never a view of the source image
    method = Image.Resampling.BOX if image.shape[0] > rows else Image.Resampling.BICUBIC
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((cols, rows), method))
    return resized, resample_labels(labels, shape)


def _degrade(image: np.ndarray, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Camera effects other surveys have: a shadow (less light, and the sensor noise a dark exposure
    carries), lens/motion blur, sensor noise, JPEG recompression."""
    from PIL import Image

    out = image
    if aug.shadow and rng.random() < aug.shadow:
        light = float(np.exp(rng.uniform(np.log(0.05), np.log(0.5))))
        out = out.astype(np.float32) * light + rng.normal(0.0, rng.uniform(1.0, 3.0), out.shape).astype(np.float32)
    if aug.blur and rng.random() < aug.blur:
        from scipy.ndimage import gaussian_filter

        sigma = float(rng.uniform(0.3, 1.5))
        out = gaussian_filter(out.astype(np.float32), sigma=(sigma, sigma, 0))
    if aug.noise and rng.random() < aug.noise:
        out = out.astype(np.float32) + rng.normal(0.0, rng.uniform(1.0, 8.0), out.shape).astype(np.float32)
    if aug.jpeg and rng.random() < aug.jpeg:
        import io

        buffer = io.BytesIO()
        Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=int(rng.integers(30, 91)))
        out = np.asarray(Image.open(buffer).convert("RGB"))
    return out


def _camera(image: np.ndarray, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Camera effects, and for a share ``aug.coarse`` of crops a coarser camera's: the picture a flight
    1.2-2x higher takes of this ground (area average), its effects at that GSD, then enlarged back
    bilinearly as ``survey.resample: auto`` enlarges a coarse input for the model. Labels stay: the
    ground and its cracks are where they were, only fainter (a 1-px crack at 2x is a half-px smudge)."""
    if not (aug.coarse and rng.random() < aug.coarse):
        return _degrade(image, aug, rng)
    from PIL import Image

    rows, cols = image.shape[:2]
    factor = float(np.exp(rng.uniform(np.log(1.2), np.log(2.0))))
    small = (max(8, round(cols / factor)), max(8, round(rows / factor)))
    taken = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(small, Image.Resampling.BOX))
    taken = np.clip(np.rint(_degrade(taken, aug, rng)), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(taken).resize((cols, rows), Image.Resampling.BILINEAR))


def _geometric(
    image: np.ndarray, labels: np.ndarray, aug: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
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
        gray = out @ np.array(LUMA, dtype=np.float32)
        out = (out - gray[..., None]) * rng.uniform(1 - aug.saturation, 1 + aug.saturation) + gray[..., None]
    return np.clip(out, 0, 255)


def footprint_valid(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random orthomosaic footprint edge across a size x size crop: True inside (valid data).

    One or two cuts (an edge or a corner), each a line at a random angle with a low-frequency
    wobble, placed 5-45 % of the way across the crop along its normal (a diagonal cut near a corner
    leaves only a sliver outside), like the ragged border of a mosaic.
    """
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    valid = np.ones((size, size), dtype=bool)
    for _ in range(2 if rng.random() < 0.3 else 1):
        angle = rng.uniform(0.0, 2.0 * np.pi)
        across = cols * np.cos(angle) + rows * np.sin(angle)
        along = rows * np.cos(angle) - cols * np.sin(angle)
        wobble = rng.uniform(0.0, 12.0) * np.sin(
            2.0 * np.pi * along / rng.uniform(40.0, 400.0) + rng.uniform(0.0, 2.0 * np.pi)
        )
        low, high = float(across.min()), float(across.max())
        valid &= across + wobble >= low + rng.uniform(0.05, 0.45) * (high - low)
    return valid


def with_footprint(image: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The crop as a survey tile on the footprint edge looks to the model: nodata filled the way
    inference fills it (``mirror_fill``, so the seam is not learnt as a crack), labels outside ignored."""
    import torch  # here, not at import: data preparation and `msaf mosaic` need neither torch nor scipy

    from pipeline.inference.fill import mirror_fill

    fallback = torch.from_numpy(image.reshape(-1, 3).mean(0))
    filled = mirror_fill(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), valid, fallback)
    return filled.numpy().transpose(1, 2, 0), np.where(valid, labels, NO_CLASS)


class CropBatch(NamedTuple):
    """One training batch: images float32 (N, crop, crop, 3) in 0..255, labels int64 (N, crop, crop),
    per crop the class ids its data set never labels, and per crop the data set it came from."""

    images: np.ndarray
    labels: np.ndarray
    unlabelled: list[tuple[int, ...]]
    sources: list[str]


class CropSampler:
    """Draws augmented training crops from one or more data sets.

    Each crop first picks a data set by ``weights`` (so a small domain set is not drowned by a
    larger one), then an image of it; with probability ``focus`` the crop is placed around a
    labelled non-background pixel (thin cracks are < 1 % of pixels: random crops are mostly empty).
    """

    def __init__(
        self,
        sets: Mapping[str, Sequence[LabelledImage]],
        crop: int,
        aug: AugmentConfig,
        *,
        weights: Mapping[str, float] | None = None,
        focus: float = 0.0,
    ) -> None:
        self.names = [name for name, items in sets.items() if items]
        if not self.names:
            raise ValueError("no training images to sample crops from")
        self.sets = {name: list(sets[name]) for name in self.names}
        share = np.array([(weights or {}).get(name, 1.0) for name in self.names], dtype=np.float64)
        self.share = share / share.sum()
        self.crop, self.aug, self.focus = crop, aug, focus
        self._foreground = {
            name: [np.flatnonzero((it.labels != 0) & (it.labels != NO_CLASS)) for it in items]
            for name, items in self.sets.items()
        }

    def _draw(self, rng: np.random.Generator) -> tuple[str, LabelledImage, tuple[int, int] | None]:
        name = self.names[int(rng.choice(len(self.names), p=self.share))] if len(self.names) > 1 else self.names[0]
        index = int(rng.integers(0, len(self.sets[name])))
        item, foreground = self.sets[name][index], self._foreground[name][index]
        if self.focus and foreground.size and rng.random() < self.focus:
            flat = int(foreground[int(rng.integers(0, foreground.size))])
            return name, item, divmod(flat, item.labels.shape[1])
        return name, item, None

    def batch(self, batch_size: int, rng: np.random.Generator) -> CropBatch:
        """``batch_size`` augmented crops, each from a data set drawn by its share."""
        images = np.empty((batch_size, self.crop, self.crop, 3), dtype=np.float32)
        labels = np.empty((batch_size, self.crop, self.crop), dtype=np.int64)
        unlabelled, sources = [], []
        for i in range(batch_size):
            name, item, around = self._draw(rng)
            low, high = self.aug.scale
            factor = float(np.exp(rng.uniform(np.log(low), np.log(high)))) if high > low else low
            if factor != 1.0:
                image, label = _rescaled(item, self.crop, factor, rng, around)
            else:
                image, label = _random_crop(item, self.crop, rng, around)
            image, label = _geometric(image, label, self.aug, rng)
            image = _photometric(_camera(image, self.aug, rng), self.aug, rng)
            if self.aug.footprint and rng.random() < self.aug.footprint:
                image, label = with_footprint(image, label, footprint_valid(self.crop, rng))
            images[i] = image
            labels[i] = label
            unlabelled.append(item.unlabelled)
            sources.append(name)
        return CropBatch(images, labels, unlabelled, sources)


def sample_batch(
    items: Sequence[LabelledImage], batch_size: int, crop: int, aug: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a batch of augmented square crops from one list of images (uniformly, no focus).

    Returns:
        images float32 (N, crop, crop, 3) in 0..255 and labels int64 (N, crop, crop).
    """
    batch = CropSampler({"": items}, crop, aug).batch(batch_size, rng)
    return batch.images, batch.labels
