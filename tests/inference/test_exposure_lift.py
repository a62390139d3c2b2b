"""The shadow lift before the network: which tiles it touches and by how much, bit-identity above the
floor, the same rule in the tile runner and in whole-image prediction, and what it buys on a real
shadowed survey with the shipped model (held-back photos)."""

from __future__ import annotations

import numpy as np
import rasterio
import torch

from pipeline.inference.predict import MAX_LIFT, Standardise, lift_shadows, normalise
from pipeline.raster.luminance import LUMA, grey_levels

MEAN, STD = (123.7, 116.3, 103.5), (58.4, 57.1, 57.4)


def _luminance(tile: torch.Tensor) -> float:
    return float(grey_levels(tile.numpy()).mean())


def test_dark_tiles_are_lifted_to_the_floor_and_lit_ones_are_not_touched():
    rng = np.random.default_rng(0)
    lit = rng.uniform(130, 250, (3, 32, 32))  # luminance ~190
    dark = lit * 0.2  # a shadow: luminance ~38
    dark[:, :2, :2] = 200.0  # a lit speck in it, which the lift clips
    night = lit * 0.01  # beyond the largest lift
    batch = torch.tensor(np.stack([lit, dark, night]), dtype=torch.float32)
    before = batch.clone()
    lift_shadows(batch, 170.0, torch.tensor(LUMA))
    assert torch.equal(batch[0], before[0])  # at or above the floor: bit for bit
    gain = 170.0 / _luminance(before[1])
    assert torch.equal(batch[1][:, :2, :2], torch.full((3, 2, 2), 255.0))  # clipped as a longer exposure would
    assert torch.allclose(batch[1][:, 2:], before[1][:, 2:] * gain)  # the rest scaled by floor / luminance
    assert 165.0 < _luminance(batch[1]) < 170.0  # the clipped speck gives back a little
    assert torch.allclose(batch[2], before[2] * MAX_LIFT)  # lifted as far as it goes


def test_a_floor_of_zero_is_the_plain_standardisation():
    images = torch.randint(0, 60, (2, 16, 16, 3), dtype=torch.uint8)
    plain = normalise(images, MEAN, STD)
    assert torch.equal(normalise(images, MEAN, STD, 0.0), plain)
    lifted = normalise(images, MEAN, STD, 170.0)
    assert not torch.equal(lifted, plain)
    batch = images.permute(0, 3, 1, 2).float()
    assert torch.equal(Standardise(MEAN, STD, torch.device("cpu"), 170.0).in_place(batch.clone()), lifted)


def test_the_tile_runner_lifts_each_tile_as_whole_image_prediction_lifts_an_image():
    """A runner with a floor gives a dark tile the probabilities whole-image prediction gives it."""
    from pipeline.checkpoint import load_checkpoint
    from pipeline.inference.predict import predict_probabilities
    from pipeline.inference.runner import TileRunner
    from pipeline.locations import shipped_model

    model, meta = load_checkpoint(shipped_model())
    rng = np.random.default_rng(1)
    tiles = (rng.uniform(140, 250, (2, 64, 64, 3)) * np.array([1.0, 0.15])[:, None, None, None]).astype(np.uint8)
    runner = TileRunner(model, meta.mean, meta.std, torch.device("cpu"), 2, (64, 64), exposure_floor=170.0)
    plain = TileRunner(model, meta.mean, meta.std, torch.device("cpu"), 2, (64, 64))
    lifted, unlifted = runner.predict(tiles), plain.predict(tiles)
    np.testing.assert_array_equal(lifted[0], unlifted[0])  # the lit tile: bit for bit
    assert np.abs(lifted[1] - unlifted[1]).max() > 1e-3  # the dark one sees other pixels
    network = runner.model  # the folded network the runner runs: the same arithmetic
    for tile, probs in zip(tiles, lifted, strict=True):
        whole = predict_probabilities(network, tile, meta.mean, meta.std, torch.device("cpu"), exposure_floor=170.0)
        np.testing.assert_allclose(whole, probs, atol=1e-5)


def _darkened(ortho, out, gain: float, seed: int = 0):
    """The orthomosaic under ``gain`` times the light, with sensor noise, stored as JPEG (q85)."""
    with rasterio.open(ortho) as src:
        data, profile = src.read().astype(np.float32), src.profile
    noisy = data * gain + np.random.default_rng(seed).normal(0, 2, data.shape)
    profile |= {"compress": "jpeg", "jpeg_quality": 85, "tiled": True, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    return out


def test_a_shadowed_survey_finds_its_cracks_with_the_shipped_models_floor(tmp_path, cfd_dir):
    """Held-back CrackForest photos (the shipped model's own validation split) as a 512² orthomosaic at
    a third of the light (mean luminance ~44, a soffit in shade): without the lift the shipped model
    finds almost none of the cracks; with its floor it finds them as in the light."""
    from pipeline.checkpoint import read_metadata
    from pipeline.config import SurveyConfig
    from pipeline.data.mosaic import compose_mosaic
    from pipeline.locations import shipped_model
    from pipeline.survey import run_survey
    from pipeline.survey_accuracy import score_mask
    from tests.conftest import copy_pairs

    meta = read_metadata(shipped_model())
    assert meta.exposure_floor == 170.0
    held_back = copy_pairs(cfd_dir, tmp_path / "val", meta.model_dump()["data_sets"]["crackforest"]["val"])
    ortho, truth = tmp_path / "ortho.tif", tmp_path / "truth.tif"
    classes = meta.classes  # background 0, crack 255, joint 204: CrackForest's masks as they are
    compose_mosaic(held_back / "images", held_back / "masks", ortho, truth, 512, 512, 0.001, "EPSG:32633", classes)
    with rasterio.open(truth) as reference:
        expected = reference.read(1)
    scores = {}
    for name, gain, floor in (("lit", 1.0, None), ("shadow", 0.33, None), ("shadow, no lift", 0.33, 0.0)):
        source = _darkened(ortho, tmp_path / f"{name}.tif", gain)
        out = tmp_path / name
        cfg = SurveyConfig(device="cpu", gsd_policy="ignore", exposure_floor=floor)
        record = run_survey(source, out, cfg, model_path=shipped_model())
        with rasterio.open(out / "mask.tif") as mask:
            scores[name] = score_mask(mask.read(1), expected, [c.name for c in classes]).classes["crack"].tol_f1
        assert record.exposure_floor == (170.0 if floor is None else floor)
    assert scores["shadow, no lift"] < 0.3
    assert scores["shadow"] > 0.8 and scores["lit"] > 0.8
    assert abs(scores["shadow"] - scores["lit"]) < 0.05


def test_a_lifted_survey_is_exact_for_any_block_size_keyed_and_reported(tmp_path, crack_mosaic):
    """Each tile is lifted by its own pixels, so the mask does not depend on how the raster is cut; the
    floor keys a resume's blocks (the model's own floor given explicitly is the same survey), and the
    report's provenance says how tiles were lifted."""
    from pipeline.config import ReportConfig, SurveyConfig
    from pipeline.locations import shipped_model
    from pipeline.report.build import report_survey
    from pipeline.survey import prepare_survey, run_survey

    dark = _darkened(crack_mosaic[0], tmp_path / "dark.tif", 0.3)
    cfg = SurveyConfig(device="cpu", gsd_policy="ignore")
    run_survey(dark, tmp_path / "whole", cfg.model_copy(update={"block": 4096}), model_path=shipped_model())
    cut = cfg.model_copy(update={"block": 200, "workers": 2, "readers": 2})
    run_survey(dark, tmp_path / "cut", cut, model_path=shipped_model())
    for name in ("mask.tif", "confidence.tif"):
        with rasterio.open(tmp_path / "whole" / name) as a, rasterio.open(tmp_path / "cut" / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
    keys = [
        prepare_survey(dark, tmp_path / "k", cfg.model_copy(update=update), model_path=shipped_model()).key
        for update in ({}, {"exposure_floor": 170.0}, {"exposure_floor": 0.0})
    ]
    assert keys[0] == keys[1] != keys[2]
    report_survey(tmp_path / "whole", ReportConfig())
    assert "tiles darker than luminance 170 lifted to it" in (tmp_path / "whole" / "report.html").read_text()
