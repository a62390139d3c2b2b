"""Stitching correctness with models whose per-pixel answer is known."""

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.inference.blend import blend_block, infer_block
from pipeline.inference.runner import TileRunner, flush_denormals
from pipeline.raster.grid import Box, TileGrid

MEAN, STD = (120.0, 110.0, 100.0), (40.0, 40.0, 40.0)


def _conv_model(kernel: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Conv2d(3, 3, kernel, padding=kernel // 2)
    with torch.no_grad():
        model.weight.mul_(3)
    return model.eval()


def _stitch(model: nn.Module, image: np.ndarray, tile: int, overlap: int, block: int) -> np.ndarray:
    height, width = image.shape[:2]
    grid = TileGrid(height, width, tile, overlap)
    runner = TileRunner(model, MEAN, STD, torch.device("cpu"), 4, grid.tile_shape)
    out = np.zeros((3, height, width), np.float32)
    valid = np.ones((height, width), bool)
    for b in grid.blocks(block):
        region = image[b.region.row0 : b.region.row1, b.region.col0 : b.region.col1].transpose(2, 0, 1)
        region_valid = valid[b.region.row0 : b.region.row1, b.region.col0 : b.region.col1]
        out[:, b.core.row0 : b.core.row1, b.core.col0 : b.core.col1] = blend_block(
            runner, grid, b, region, region_valid
        ).numpy()
    return out


def _whole(model: nn.Module, image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    runner = TileRunner(model, MEAN, STD, torch.device("cpu"), 1, (height, width))
    return runner.predict(image[None])[0]


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (150, 211, 3), dtype=np.uint8)


@pytest.mark.parametrize("block", [40, 64, 1000])
def test_per_pixel_model_stitches_to_the_whole_image_answer(image, block):
    model = _conv_model(1)
    stitched, whole = _stitch(model, image, 64, 16, block), _whole(model, image)
    np.testing.assert_allclose(stitched, whole, atol=2e-6)
    np.testing.assert_array_equal(stitched.argmax(0), whole.argmax(0))


def test_tile_borders_carry_almost_no_weight(image):
    """A 3x3 model is wrong only on tile borders (zero padding); the blend must hide that."""
    model = _conv_model(3)
    stitched, whole = _stitch(model, image, 64, 16, 80), _whole(model, image)
    inner = (slice(None), slice(1, -1), slice(1, -1))  # raster edges are padded in both
    # a flat average of overlapping tiles would be off by ~half the border error (~0.5 here)
    np.testing.assert_allclose(stitched[inner], whole[inner], atol=3e-3)


def test_nodata_is_filled_with_the_mean_colour_and_marked():
    model = _conv_model(3)
    pixels = np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    valid = np.ones((80, 80), bool)
    valid[:, :30] = False
    grid = TileGrid(80, 80, 64, 16)
    (b,) = grid.blocks(1000)
    runner = TileRunner(model, MEAN, STD, torch.device("cpu"), 4, grid.tile_shape)
    result = infer_block(runner, grid, b, pixels.transpose(2, 0, 1), valid)
    assert (result.classes[:, :30] == 255).all() and (result.confidence[:, :30] == 0).all()
    assert (result.classes[:, 30:] != 255).all() and (result.confidence[:, 30:] > 0).all()
    garbage = pixels.copy()
    garbage[:, :30] = 7  # whatever lies under nodata must not change the answer
    again = infer_block(runner, grid, b, garbage.transpose(2, 0, 1), valid)
    np.testing.assert_array_equal(result.classes, again.classes)
    np.testing.assert_array_equal(result.confidence, again.confidence)
    assert Box(0, 0, 80, 80) == result.core


@pytest.mark.parametrize("threads", [1, 2])
def test_runner_pads_batches_so_results_do_not_depend_on_batch_fill(threads):
    """Bit-identical with one torch thread. With more, x86's subnormal flush (set per thread, and
    torch sets it on the calling thread only) lets a tile's values below float32's smallest normal
    (1.2e-38) depend on which thread computed them: nothing larger may differ."""
    from pipeline.model import build_model

    model = build_model("dsnet-tiny", 2).eval()
    tiles = np.random.default_rng(2).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    runner = TileRunner(model, MEAN, STD, torch.device("cpu"), 4, (64, 64))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        together = runner.predict(tiles)
        one_by_one = np.concatenate([runner.predict(tiles[i : i + 1]) for i in range(5)])
    finally:
        torch.set_num_threads(before)
    if threads == 1:
        np.testing.assert_array_equal(together, one_by_one)
    else:
        np.testing.assert_array_less(np.abs(together - one_by_one), np.finfo(np.float32).tiny)
        np.testing.assert_array_equal(together.argmax(axis=1), one_by_one.argmax(axis=1))
    np.testing.assert_allclose(together.sum(axis=1), 1.0, atol=1e-5)


def test_flip_tta_averages_the_prediction_of_the_mirrored_tile():
    model = _conv_model(3)
    tiles = np.random.default_rng(3).integers(0, 256, (2, 32, 40, 3), dtype=np.uint8)
    plain = TileRunner(model, MEAN, STD, torch.device("cpu"), 2, (32, 40))
    tta = TileRunner(model, MEAN, STD, torch.device("cpu"), 2, (32, 40), tta=True)
    mirrored = plain.predict(np.ascontiguousarray(tiles[:, :, ::-1]))[..., ::-1]
    expected = (plain.predict(tiles) + mirrored) / 2
    np.testing.assert_allclose(tta.predict(tiles), expected, atol=1e-6)
    assert not np.allclose(tta.predict(tiles), plain.predict(tiles), atol=1e-3)


def test_mirror_fill_continues_the_surface_across_the_footprint_edge():
    import torch

    from pipeline.inference.fill import mirror_fill

    image = torch.full((3, 64, 80), 90.0)
    image[:, :, :40] = torch.linspace(60, 120, 40)  # a gradient on the valid left half
    valid = np.zeros((64, 80), dtype=bool)
    valid[:, :40] = True
    inside = torch.from_numpy(valid)
    filled = mirror_fill(image.clone().masked_fill(~inside, 0), valid, torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(filled[:, inside], image[:, inside])  # valid pixels untouched
    step = (filled[:, :, 40] - filled[:, :, 39]).abs().max()
    assert step < 3.5  # continues the surface (a flat mean fill steps by ~30)
    assert torch.equal(filled[:, :, 40], image[:, :, 38])  # column 40 mirrors column 38 through 39
    assert filled.min() >= 60 - 1e-4 and filled.max() <= 120 + 1e-4
    empty = mirror_fill(image, np.zeros((64, 80), dtype=bool), torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(empty[:, 0, 0], torch.tensor([1.0, 2.0, 3.0]))


def test_the_footprint_edge_is_not_read_as_a_crack(tmp_path, crack_mosaic):
    import rasterio
    from scipy import ndimage

    from pipeline.config import SurveyConfig
    from pipeline.locations import shipped_model
    from pipeline.survey import run_survey

    ortho, truth_path = crack_mosaic  # an irregular nodata footprint around real crack photos
    run_survey(ortho, tmp_path / "out", SurveyConfig(device="cpu", gsd_policy="ignore"), model_path=shipped_model())
    with rasterio.open(tmp_path / "out" / "mask.tif") as mask, rasterio.open(truth_path) as truth:
        pred, labels = mask.read(1), truth.read(1)
    valid = pred != 255
    near_edge = valid & (ndimage.distance_transform_edt(valid) <= 8)
    predicted, true = int(((pred == 1) & near_edge).sum()), int(((labels == 1) & near_edge).sum())
    assert predicted < 1.5 * true  # mirror 686 vs 599 true; push-pull 1769; a flat mean-colour fill 4242 (7x)


def test_cpu_runner_runs_the_folded_network_channels_last_on_a_plain_batch_with_the_same_answer():
    """The runner's network is a copy with the batch norms folded, its weights channels_last (oneDNN's
    fast convolutions); the batch buffer stays plain on a CPU (the engine's own elementwise work is
    faster so). The first convolution converts the input: the answer is bit for bit the folded
    network's on a channels_last input, and the caller's model keeps its batch norms."""
    from pipeline.inference.fold import fold_batch_norms
    from pipeline.model import build_model

    model = build_model("dsnet-tiny", 3).eval()
    tiles = np.random.default_rng(4).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = TileRunner(model, MEAN, STD, torch.device("cpu"), 3, (64, 64))
        convs = [m for m in runner.model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
        assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
        assert runner._inputs.is_contiguous()
        assert sum(isinstance(m, nn.BatchNorm2d) for m in runner.model.modules()) == 2  # the two not after a conv
        assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 50
        probabilities = runner.predict(tiles)
        standardised = (torch.from_numpy(tiles).permute(0, 3, 1, 2).float() - torch.tensor(MEAN).view(1, 3, 1, 1)) / (
            torch.tensor(STD).view(1, 3, 1, 1)
        )
        folded = fold_batch_norms(model).to(memory_format=torch.channels_last)
        with torch.inference_mode(), flush_denormals(torch.device("cpu")):  # as the runner does
            expected = folded(standardised.contiguous(memory_format=torch.channels_last)).softmax(dim=1)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(probabilities, expected.numpy())
