"""The engine's fast paths give exactly the answer of the plain computation they replace: the mask
must not change by a single pixel when the engine gets faster."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from pipeline.class_ids import NO_CLASS
from pipeline.inference.blend import QUANTISE_ROWS, quantise
from pipeline.inference.fill import gather_on_device, mirror_fill, mirror_sources
from pipeline.raster.grid import Box


def _plain_quantise(probs: torch.Tensor, valid: np.ndarray, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """The rule as first written (hits score 1 + p, misses -1, argmax), then round(p x 255) in 1..255."""
    scores = probs.clone()
    for cls, threshold in thresholds:
        scores[cls] = torch.where(probs[cls] >= threshold, 1.0 + probs[cls], -1.0)
    ids = scores.argmax(dim=0)
    top = probs.gather(0, ids.unsqueeze(0))[0]
    classes = ids.to(torch.uint8).numpy().copy()
    confidence = (top * 255).round().clamp(1, 255).to(torch.uint8).numpy().copy()
    classes[~valid], confidence[~valid] = NO_CLASS, 0
    return classes, confidence


@pytest.mark.parametrize("thresholds", [(), ((1, 0.5),), ((2, 0.3), (1, 0.35)), ((0, 0.4), (1, 0.4), (2, 0.4))])
def test_the_in_place_decision_equals_the_plain_rule_pixel_for_pixel(thresholds):
    height, width = QUANTISE_ROWS * 2 + 37, 301  # a short last chunk of rows
    generator = torch.Generator().manual_seed(1)
    probs = (torch.randn(3, height, width, generator=generator) * 2).softmax(dim=0)
    probs[:, :5] = torch.tensor([0.4, 0.4, 0.2])[:, None, None]  # ties
    probs[:, 5:9] = torch.tensor([0.25, 0.5, 0.25])[:, None, None]  # exactly at a threshold
    probs[:, 9:12] = torch.tensor([0.3, 0.35, 0.35])[:, None, None]
    probs[:, 12:14] = torch.tensor([0.2, 0.4, 0.4])[:, None, None]
    valid = np.random.default_rng(2).random((height, width)) > 0.2
    result = quantise(Box(0, 0, height, width), probs, valid, thresholds)
    classes, confidence = _plain_quantise(probs, valid, thresholds)
    np.testing.assert_array_equal(result.classes, classes)
    np.testing.assert_array_equal(result.confidence, confidence)
    assert probs.isfinite().all()  # the probabilities are not consumed


def _plain_mirror_fill(image: torch.Tensor, valid: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """The fill as first written (distances and indices, int64 arithmetic)."""
    if bool(valid.all()):
        return image
    if not bool(valid.any()):
        return fallback.view(3, 1, 1).expand_as(image).clone()
    inside = valid.numpy()
    height, width = inside.shape
    _, (near_row, near_col) = ndimage.distance_transform_edt(~inside, return_indices=True)
    rows, cols = np.indices(inside.shape)
    mirror_row = np.clip(2 * near_row - rows, 0, height - 1)
    mirror_col = np.clip(2 * near_col - cols, 0, width - 1)
    usable = inside[mirror_row, mirror_col]
    source = np.where(usable, mirror_row, near_row) * width + np.where(usable, mirror_col, near_col)
    filled = image.reshape(3, -1)[:, torch.from_numpy(source.reshape(-1))].reshape(image.shape)
    return torch.where(valid[None], image, filled)


@pytest.mark.parametrize("seed", range(4))
def test_the_mirror_fill_equals_the_plain_fill_on_irregular_footprints(seed):
    rng = np.random.default_rng(seed)
    height, width = 96, 128
    rows, cols = np.indices((height, width))
    centre = rng.uniform(0, [height, width])
    inside = np.hypot(rows - centre[0], (cols - centre[1]) * rng.uniform(0.5, 2)) < rng.uniform(30, 90)
    inside &= rng.random((height, width)) > 0.02  # speckled holes as well as one large edge
    image = torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))
    valid = torch.from_numpy(inside)
    fallback = torch.tensor([1.0, 2.0, 3.0])
    plain = _plain_mirror_fill(image.float(), valid, fallback)
    assert torch.equal(mirror_fill(image.float(), inside, fallback), plain)
    filled_bytes = mirror_fill(image, inside, fallback)  # the runner fills uint8 tiles, then converts
    assert filled_bytes.dtype == torch.uint8 and torch.equal(filled_bytes.float(), plain)
    # a GPU gathers with torch where the tile lives: the same pixels (run here on the CPU)
    on_device = gather_on_device(image, mirror_sources(inside).ravel())
    assert torch.equal(on_device.float(), plain)
    # a tile cut from a larger region (a strided view, as the runner passes it) is filled the same
    region = torch.from_numpy(rng.integers(0, 256, (3, height + 10, width + 20), dtype=np.uint8))
    region[:, 4 : 4 + height, 7 : 7 + width] = image
    view = region[:, 4 : 4 + height, 7 : 7 + width]
    assert torch.equal(mirror_fill(view, inside, fallback), filled_bytes)
    assert torch.equal(region[:, 4 : 4 + height, 7 : 7 + width], image)  # the region is not written to


def test_skipping_tiles_without_valid_pixels_leaves_every_valid_pixel_as_it_was():
    """Tiles that cover nodata alone are not run (a footprint's outside is a fifth of a typical
    orthomosaic); the tiles a valid pixel sums over, and their order, stay the same, so its
    probabilities are bit-identical and so is the block's mask."""
    from pipeline.inference.blend import infer_block, quantise
    from pipeline.inference.runner import TileRunner
    from pipeline.raster.grid import TileGrid

    rng = np.random.default_rng(3)
    height, width = 300, 420
    rows, cols = np.indices((height, width))
    valid = (rows + 0.6 * cols < 330) & (rng.random((height, width)) > 0.01)  # a diagonal footprint edge
    image = rng.integers(0, 256, (3, height, width), dtype=np.uint8)
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 5, padding=2).eval()
    grid = TileGrid(height, width, 64, 16)
    block = grid.blocks(1000)[0]
    runner = TileRunner(
        model, (120.0,) * 3, (40.0,) * 3, torch.device("cpu"), 4, grid.tile_shape, thresholds=((1, 0.4),)
    )
    empty = [t for t in block.tiles if not valid[t.relative_to(block.region)].any()]
    assert len(empty) >= 5  # the test exercises the skip
    every_tile = runner.blend(grid, block, image, valid).clone()
    skipped = runner.blend(grid, block, image, valid, skip_nodata_tiles=True)
    inside = torch.from_numpy(valid)
    assert torch.equal(skipped[:, inside], every_tile[:, inside])
    assert skipped.isfinite().all()  # pixels no run tile covers come out 0, not 0/0
    plain = quantise(block.core, every_tile, valid, runner.thresholds)
    fast = infer_block(runner, grid, block, image, valid)
    np.testing.assert_array_equal(fast.classes, plain.classes)
    np.testing.assert_array_equal(fast.confidence, plain.confidence)


@pytest.mark.parametrize(("tile", "overlap", "block"), [(64, 16, 1000), (64, 40, 1000), (48, 8, 100), (64, 16, 50)])
def test_bands_of_rows_equal_the_whole_block_blend_bit_for_bit(tile, overlap, block):
    """``blend_rows`` sums into a window one tile high that slides down the block (overlap 40 of 64:
    the rows kept overlap the rows they move to); its bands, in order, are exactly ``blend``."""
    from pipeline.inference.runner import TileRunner
    from pipeline.raster.grid import TileGrid

    rng = np.random.default_rng(4)
    height, width = 300, 260
    rows, cols = np.indices((height, width))
    valid = (rows + 0.8 * cols < 380) & (rng.random((height, width)) > 0.01)  # whole tiles of nodata too
    image = rng.integers(0, 256, (3, height, width), dtype=np.uint8)
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 5, padding=2).eval()
    grid = TileGrid(height, width, tile, overlap)
    runner = TileRunner(model, (120.0,) * 3, (40.0,) * 3, torch.device("cpu"), 4, grid.tile_shape)
    most_bands = 0
    for b in grid.blocks(block):
        pixels, footprint = image[(slice(None), *b.region.window.toslices())], valid[b.region.window.toslices()]
        bands = [(row0, probs.clone()) for row0, probs in runner.blend_rows(grid, b, pixels, footprint)]
        assert [row0 for row0, _ in bands] == list(np.cumsum([0] + [p.shape[1] for _, p in bands[:-1]]))
        # handed out 7 rows at a time, each divided just before it goes: the same rows, in the same order
        pieces = [(row0, probs.clone()) for row0, probs in runner.blend_rows(grid, b, pixels, footprint, 7)]
        assert [row0 for row0, _ in pieces] == list(np.cumsum([0] + [p.shape[1] for _, p in pieces[:-1]]))
        assert all(p.shape[1] <= 7 for _, p in pieces) and len(pieces) >= -(-b.core.height // 7)
        whole = runner.blend(grid, b, pixels, footprint, skip_nodata_tiles=True)
        assert torch.equal(torch.cat([p for _, p in bands], dim=1), whole)
        assert torch.equal(torch.cat([p for _, p in pieces], dim=1), whole)
        most_bands = max(most_bands, len(bands))
    assert most_bands >= -(-min(block, height) // tile)  # bands are at most a tile high: the window slid
