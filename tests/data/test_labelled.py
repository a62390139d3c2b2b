"""Discovery, validation, class mapping and split of labelled folders (real files)."""

import shutil

import numpy as np
import pytest

from pipeline.config import AugmentConfig, ClassSpec
from pipeline.data import class_lut, find_pairs, load_labelled, sample_batch, split_pairs
from pipeline.errors import MsafError
from tests.conftest import write_pair

CRACK = [ClassSpec(name="background", values=[0]), ClassSpec(name="crack", values=[255])]


def test_real_cfd_pairs_load_as_binary_labels(cfd_subset):
    items = load_labelled(find_pairs(cfd_subset / "images", cfd_subset / "masks"), class_lut(CRACK))
    assert len(items) == 10
    for item in items:
        assert item.image.shape == (320, 480, 3) and item.image.dtype == np.uint8
        assert set(np.unique(item.labels)) <= {0, 1}
        assert 0.001 < item.labels.mean() < 0.1  # cracks are a few percent of pixels


def test_three_class_mask_maps_values_to_ids(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10] = 128
    mask[12:15, :10] = 255
    write_pair(tmp_path, "a", np.full((20, 30, 3), 90, np.uint8), mask)
    classes = [
        ClassSpec(name="bg", values=[0]),
        ClassSpec(name="spall", values=[128]),
        ClassSpec(name="crack", values=[255]),
    ]
    (item,) = load_labelled(find_pairs(tmp_path / "images", tmp_path / "masks"), class_lut(classes))
    expected = np.zeros((20, 30), np.uint8)
    expected[5:10] = 1
    expected[12:15, :10] = 2
    np.testing.assert_array_equal(item.labels, expected)


def test_ignore_values_become_ignore_index(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[0] = 7
    write_pair(tmp_path, "a", np.zeros((8, 8, 3), np.uint8), mask)
    (item,) = load_labelled(find_pairs(tmp_path / "images", tmp_path / "masks"), class_lut(CRACK, [7]))
    assert (item.labels[0] == 255).all() and (item.labels[1:] == 0).all()


def test_image_without_mask_and_mask_without_image(cfd_subset):
    (cfd_subset / "masks" / "001.png").unlink()
    with pytest.raises(MsafError, match=r"001\.jpg has no mask"):
        find_pairs(cfd_subset / "images", cfd_subset / "masks")
    shutil.copy(cfd_subset / "masks" / "003.png", cfd_subset / "masks" / "001.png")
    (cfd_subset / "images" / "004.jpg").unlink()
    with pytest.raises(MsafError, match=r"004\.png has no image"):
        find_pairs(cfd_subset / "images", cfd_subset / "masks")


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(MsafError, match="image folder is empty"):
        find_pairs(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(MsafError, match="folder not found"):
        find_pairs(tmp_path / "nope", tmp_path / "masks")


def test_size_mismatch_names_the_mask(tmp_path):
    write_pair(tmp_path, "a", np.zeros((10, 10, 3), np.uint8), np.zeros((10, 12), np.uint8))
    with pytest.raises(MsafError, match=r"a\.png: size 12x10 differs from its image"):
        load_labelled(find_pairs(tmp_path / "images", tmp_path / "masks"), class_lut(CRACK))


def test_unknown_mask_values_are_listed(tmp_path):
    write_pair(tmp_path, "a", np.zeros((4, 4, 3), np.uint8), np.array([[0, 1, 2, 255]] * 4, np.uint8))
    with pytest.raises(MsafError, match=r"mask value\(s\) \[1, 2\] are not mapped"):
        load_labelled(find_pairs(tmp_path / "images", tmp_path / "masks"), class_lut(CRACK))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_image_names_the_file(cfd_subset, damage):
    target = cfd_subset / "images" / "003.jpg"
    data = target.read_bytes()
    target.write_bytes(b"not a jpeg at all" if damage == "garbage" else data[: len(data) // 3])
    with pytest.raises(MsafError, match=r"003\.jpg: cannot read image"):
        load_labelled(find_pairs(cfd_subset / "images", cfd_subset / "masks"), class_lut(CRACK))


def test_split_is_deterministic_disjoint_and_complete(cfd_dir):
    pairs = find_pairs(cfd_dir / "images", cfd_dir / "masks")
    train, val = split_pairs(pairs, 0.2, seed=42)
    again_train, again_val = split_pairs(pairs, 0.2, seed=42)
    assert [p.stem for p in val] == [p.stem for p in again_val]
    assert [p.stem for p in train] == [p.stem for p in again_train]
    assert len(val) == round(0.2 * len(pairs)) and not {p.stem for p in train} & {p.stem for p in val}
    assert len(train) + len(val) == len(pairs)
    _, other_val = split_pairs(pairs, 0.2, seed=7)
    assert {p.stem for p in other_val} != {p.stem for p in val}


def test_augmentation_keeps_image_and_mask_aligned(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    write_pair(tmp_path, "a", image, np.where(image[..., 0] > 127, 255, 0).astype(np.uint8))
    items = load_labelled(find_pairs(tmp_path / "images", tmp_path / "masks"), class_lut(CRACK))
    geometric_only = AugmentConfig(brightness=0, contrast=0, saturation=0)
    images, labels = sample_batch(items, 16, 40, geometric_only, np.random.default_rng(1))
    np.testing.assert_array_equal(labels, (images[..., 0] > 127).astype(np.int64))
    # with geometry on, crops are not all the same orientation as the source
    assert len({images[i].tobytes() for i in range(16)}) == 16


def test_crops_larger_than_the_image_pad_labels_with_ignore(tmp_path):
    write_pair(tmp_path, "a", np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20), np.uint8))
    items = load_labelled(find_pairs(tmp_path / "images", tmp_path / "masks"), class_lut(CRACK))
    _, labels = sample_batch(items, 2, 32, AugmentConfig(), np.random.default_rng(0))
    assert (labels == 255).sum() == 2 * (32 * 32 - 20 * 20)
