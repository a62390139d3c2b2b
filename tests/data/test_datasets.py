"""Several labelled data sets: per-set value mapping, photo-wise split, balanced and focused crops."""

import numpy as np
import pytest

from pipeline.config import AugmentConfig
from pipeline.data import CropSampler, find_pairs, split_pairs
from pipeline.data.labelled import photo_of
from pipeline.data.manifest import build_manifest
from pipeline.errors import MsafError
from tests.conftest import copy_pairs, write_two_set_params

PATTERN = r"^(.+?)[a-z]?$"


def test_photo_of_strips_the_crop_letter():
    assert photo_of("DSC00552b", PATTERN) == "DSC00552" and photo_of("DSC00552", PATTERN) == "DSC00552"
    assert photo_of("DSC00674h", PATTERN) == "DSC00674" and photo_of("042", PATTERN) == "042"


def test_uav75_split_by_photo_never_straddles(uav_dir):
    pairs = find_pairs(uav_dir / "images", uav_dir / "masks")
    for seed in range(5):
        train, val = split_pairs(pairs, 0.2, seed, PATTERN)
        assert len(train) + len(val) == len(pairs) == 57
        train_photos = {photo_of(p.stem, PATTERN) for p in train}
        val_photos = {photo_of(p.stem, PATTERN) for p in val}
        assert train_photos.isdisjoint(val_photos) and val_photos
        assert split_pairs(pairs, 0.2, seed, PATTERN) == (train, val)  # deterministic
    # A plain random split of these files would put crops of one photo on both sides.
    train, val = split_pairs(pairs, 0.2, 42)
    assert {photo_of(p.stem, PATTERN) for p in train} & {photo_of(p.stem, PATTERN) for p in val}


def test_random_split_is_unchanged_by_photo_grouping_support(cfd_dir):
    """Without a pattern every file is its own group: the same split as a permutation of files."""
    pairs = find_pairs(cfd_dir / "images", cfd_dir / "masks")
    order = np.random.default_rng(42).permutation(len(pairs))
    expected_val = sorted(pairs[i].stem for i in order[: round(len(pairs) * 0.2)])
    _, val = split_pairs(pairs, 0.2, 42)
    assert sorted(p.stem for p in val) == expected_val


def test_manifest_maps_each_sets_values_and_marks_unlabelled_classes(tmp_path, cfd_dir, uav_dir):
    params = write_two_set_params(tmp_path, cfd_dir, uav_dir)
    manifest = build_manifest(params.data)
    cfd, uav = manifest.sets
    assert (cfd.name, uav.name) == ("cfd", "uav") and cfd.pixels_per_class["joint"] == 0
    assert uav.pixels_per_class["joint"] > 0 and uav.pixels_per_class["crack"] > 0
    assert cfd.unlabelled(manifest.class_names) == (2,) and uav.unlabelled(manifest.class_names) == ()
    assert {photo_of(s, PATTERN) for s in uav.train}.isdisjoint({photo_of(s, PATTERN) for s in uav.val})
    items = manifest.load("train")
    for item in items["uav"]:
        assert set(np.unique(item.labels)) <= {0, 1, 2} and item.source == "uav" and item.unlabelled == ()
    assert all(item.unlabelled == (2,) for item in items["cfd"])
    assert sum(int((item.labels == 2).sum()) for item in items["uav"]) > 0
    # The manifest round-trips through JSON with integer mask values.
    from pipeline.data.manifest import load_manifest, save_manifest

    save_manifest(manifest, tmp_path / "m.json")
    assert load_manifest(tmp_path / "m.json") == manifest


def test_crops_follow_set_weights_and_focus_on_labelled_pixels(tmp_path, cfd_dir, uav_dir):
    params = write_two_set_params(tmp_path, cfd_dir, uav_dir)
    manifest = build_manifest(params.data)
    sets = manifest.load("train")
    aug = AugmentConfig(brightness=0, contrast=0, saturation=0)
    focused = CropSampler(sets, 32, aug, weights={"cfd": 0.25, "uav": 0.75}, focus=1.0)
    rng = np.random.default_rng(0)
    images, labels, unlabelled, sources = focused.batch(400, rng)
    share_cfd = sources.count("cfd") / 400
    assert [u == (2,) for u in unlabelled] == [s == "cfd" for s in sources]  # each crop names its own set
    assert share_cfd == pytest.approx(0.25, abs=0.05)
    assert all(((crop != 0) & (crop != 255)).any() for crop in labels)  # every crop holds a crack or joint
    unfocused = CropSampler(sets, 32, aug, weights={"cfd": 0.25, "uav": 0.75}, focus=0.0)
    plain = unfocused.batch(400, np.random.default_rng(0)).labels
    assert np.mean([((c != 0) & (c != 255)).any() for c in plain]) < 0.8
    assert images.shape == (400, 32, 32, 3) and labels.dtype == np.int64


def test_a_photo_wise_split_of_one_photo_is_refused(tmp_path, uav_dir):
    pairs = find_pairs(
        copy_pairs(uav_dir, tmp_path / "one", ["DSC00560", "DSC00560b", "DSC00560c"]) / "images",
        tmp_path / "one" / "masks",
    )
    with pytest.raises(MsafError, match="crops of one photo"):
        split_pairs(pairs, 0.2, 0, PATTERN)
