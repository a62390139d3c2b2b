"""Rescale, blur, noise and JPEG augmentation: labels follow the picture; thin cracks survive."""

import numpy as np
import pytest
from scipy import ndimage

from pipeline.class_ids import NO_CLASS
from pipeline.config import AugmentConfig
from pipeline.data import CropSampler, LabelledImage
from pipeline.data.augment import resample_labels

OFF = {"hflip": False, "vflip": False, "rot90": False, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0}


def line_photo(size: int = 256, width: int = 1, *, joint: bool = True) -> LabelledImage:
    """A grey photo with one dark vertical crack of ``width`` px at column 100 (and a joint row)."""
    image = np.full((size, size, 3), 160, np.uint8)
    labels = np.zeros((size, size), np.uint8)
    image[:, 100 : 100 + width] = 60
    labels[:, 100 : 100 + width] = 1
    if joint:
        image[180:184] = 90
        labels[180:184] = 2
    return LabelledImage("line", image, labels)


def test_shrunk_labels_keep_a_one_pixel_crack_whole_and_in_place():
    photo = line_photo()
    half = resample_labels(photo.labels, (128, 128))
    assert set(np.flatnonzero((half == 1).any(0))) == {50}  # column 100 -> 50, one px wide
    assert (half[:, 50] == 1).sum() >= 128 - 2  # unbroken except where the joint crosses it
    assert set(np.flatnonzero((half == 2).any(1))) == {90, 91}  # a 4-px joint is 2 px at half scale


def test_enlarged_labels_double_the_width_and_ignored_stays_ignored():
    labels = np.zeros((64, 64), np.uint8)
    labels[:, 20] = 1
    labels[:10] = NO_CLASS
    double = resample_labels(labels, (128, 128))
    widths = (double[30:] == 1).sum(1)
    assert widths.min() >= 2 and widths.max() <= 3
    assert (double[:18] == NO_CLASS).all() and not (double[24:] == NO_CLASS).any()


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_rescaled_crops_keep_image_and_labels_aligned(factor):
    """Wherever the crop lands, the labelled crack pixels are the dark ones of the resampled picture."""
    aug = AugmentConfig(**OFF, scale=(factor, factor))
    sampler = CropSampler({"s": [line_photo(width=2, joint=False)]}, 96, aug, focus=1.0)
    images, labels, *_ = sampler.batch(8, np.random.default_rng(3))
    for image, label in zip(images, labels, strict=True):
        crack = label == 1
        assert crack.any()
        grey = image.mean(-1)
        assert grey[label == 0].mean() > 150  # the background is light
        assert grey[crack].max() <= 110  # every crack pixel is dark (at least half covered by the line)
        # the crack label is as wide as the dark line the picture shows (2 px scaled by the factor)
        cols = np.flatnonzero(crack.any(0))
        assert len(cols) == pytest.approx(2 * factor, abs=1.01)


def test_degradations_change_the_picture_not_the_labels():
    photo = line_photo()
    plain = CropSampler({"s": [photo]}, 128, AugmentConfig(**OFF), focus=1.0)
    degraded = CropSampler({"s": [photo]}, 128, AugmentConfig(**OFF, blur=1.0, noise=1.0, jpeg=1.0), focus=1.0)
    draws = [(plain.batch(1, np.random.default_rng(s)), degraded.batch(1, np.random.default_rng(s))) for s in range(4)]
    a_img, a_lab = (np.concatenate([a[k] for a, _ in draws]) for k in (0, 1))
    b_img, b_lab = (np.concatenate([b[k] for _, b in draws]) for k in (0, 1))
    assert np.array_equal(a_lab, b_lab)
    difference = np.abs(a_img - b_img).mean()
    assert 1.0 < difference < 30.0
    # blur alone: the 1-px crack's core gets lighter and its neighbours darker, as through a real lens
    blurred = CropSampler({"s": [photo]}, 128, AugmentConfig(**OFF, blur=1.0), focus=1.0)
    c_img = np.concatenate([blurred.batch(1, np.random.default_rng(s))[0] for s in range(4)])
    crack = a_lab == 1
    beside = ndimage.binary_dilation(crack, np.ones((1, 1, 3), bool)) & ~crack & (a_lab == 0)
    assert c_img.mean(-1)[crack].mean() > a_img.mean(-1)[crack].mean() + 3
    assert c_img.mean(-1)[beside].mean() < a_img.mean(-1)[beside].mean() - 3


def test_a_coarser_flight_fades_a_thin_crack_where_its_label_stays():
    """A crop as a flight 1.2-2x higher brings it to an enlarging survey: the 1-px crack is averaged
    with its background, then enlarged back, so it is fainter and wider in the picture while its
    label is the same pixels; the same seed gives the same crop."""
    photo = line_photo(joint=False)
    plain = CropSampler({"s": [photo]}, 128, AugmentConfig(**OFF), focus=1.0)
    coarse = CropSampler({"s": [photo]}, 128, AugmentConfig(**OFF, coarse=1.0), focus=1.0)
    a_img, a_lab = (np.concatenate([plain.batch(1, np.random.default_rng(s))[k] for s in range(4)]) for k in (0, 1))
    b_img, b_lab = (np.concatenate([coarse.batch(1, np.random.default_rng(s))[k] for s in range(4)]) for k in (0, 1))
    assert np.array_equal(a_lab, b_lab) and b_img.shape == a_img.shape
    crack = a_lab == 1
    grey = b_img.mean(-1)
    assert grey[crack].mean() > a_img.mean(-1)[crack].mean() + 15  # 60 -> a lighter smudge
    assert grey[crack].mean() < grey[a_lab == 0].mean() - 20  # still a dark line on light concrete
    beside = ndimage.binary_dilation(crack, np.ones((1, 1, 3), bool)) & ~crack
    assert grey[beside].mean() < 155  # spread into its neighbours (they were 160)
    np.testing.assert_array_equal(coarse.batch(1, np.random.default_rng(3)).images[0], b_img[3])


def test_a_shadowed_crop_is_darker_and_noisier_and_the_lift_shows_its_crack_again():
    """A crop taken in a shadow keeps its labels and its crack, at 0.05-0.5x the light with sensor
    noise; lifted to the floor (as training and surveys lift it) it is as light as the lit crop again,
    with the crack still a dark line; the same seed gives the same crop."""
    import torch

    from pipeline.inference.predict import lift_shadows
    from pipeline.raster.luminance import LUMA

    photo = line_photo(joint=False)
    plain = CropSampler({"s": [photo]}, 128, AugmentConfig(**OFF), focus=1.0)
    shaded = CropSampler({"s": [photo]}, 128, AugmentConfig(**OFF, shadow=1.0), focus=1.0)
    a_img, a_lab = (np.concatenate([plain.batch(1, np.random.default_rng(s))[k] for s in range(4)]) for k in (0, 1))
    b_img, b_lab = (np.concatenate([shaded.batch(1, np.random.default_rng(s))[k] for s in range(4)]) for k in (0, 1))
    assert np.array_equal(a_lab, b_lab)
    crack, ground = a_lab == 1, a_lab == 0
    for lit, dark, on, off in zip(a_img.mean(-1), b_img.mean(-1), crack, ground, strict=True):
        light = dark[off].mean() / lit[off].mean()
        assert 0.04 < light < 0.52  # 160 -> 8-80
        assert dark[off].std() > 0.5  # sensor noise where the lit crop is flat
        assert dark[on].mean() < dark[off].mean() * 0.5  # the crack is still there, as dark relative
    lifted = lift_shadows(torch.from_numpy(b_img).permute(0, 3, 1, 2).float().clone(), 160.0, torch.tensor(LUMA))
    grey = lifted.mean(1).numpy()
    assert np.allclose([g[off].mean() for g, off in zip(grey, ground, strict=True)], 160 * 0.99, rtol=0.05)
    np.testing.assert_array_equal(shaded.batch(1, np.random.default_rng(3)).images[0], b_img[3])


def test_scale_range_must_be_ordered():
    with pytest.raises(ValueError, match=r"augment\.scale"):
        AugmentConfig(scale=(2.0, 0.5))
