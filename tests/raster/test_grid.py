"""The global tile grid and block plan."""

import numpy as np
import pytest

from pipeline.raster.grid import Box, TileGrid, blend_weights


@pytest.mark.parametrize(("height", "width"), [(1, 300), (50, 40), (250, 333), (512, 512), (1000, 97)])
def test_tiles_cover_the_raster_and_stay_inside(height, width):
    grid = TileGrid(height, width, tile=128, overlap=32)
    covered = np.zeros((height, width), int)
    for tile in grid.tiles_touching(Box(0, 0, height, width)):
        assert tile.row0 >= 0 and tile.row1 <= height and tile.col0 >= 0 and tile.col1 <= width
        assert (tile.height, tile.width) == grid.tile_shape == (min(128, height), min(128, width))
        covered[tile.row0 : tile.row1, tile.col0 : tile.col1] += 1
    assert covered.min() >= 1


def test_regular_stride_and_flush_last_tile():
    grid = TileGrid(100, 300, tile=128, overlap=32)
    assert grid.col_starts.tolist() == [0, 96, 172]  # stride 96, last flush with the edge
    assert grid.row_starts.tolist() == [0]


@pytest.mark.parametrize("block", [7, 64, 96, 250, 10_000])
def test_block_cores_partition_the_raster_and_list_exactly_the_touching_tiles(block):
    grid = TileGrid(250, 333, tile=96, overlap=24)
    owner = np.full((250, 333), -1)
    for b in grid.blocks(block):
        assert (owner[b.core.row0 : b.core.row1, b.core.col0 : b.core.col1] == -1).all()
        owner[b.core.row0 : b.core.row1, b.core.col0 : b.core.col1] = b.index
        every_tile = grid.tiles_touching(Box(0, 0, 250, 333))
        expected = [t for t in every_tile if t.intersection(b.core)]
        assert list(b.tiles) == expected  # global row-major order
        assert all(b.region.intersection(t) == t for t in b.tiles)
    assert (owner >= 0).all()
    assert grid.n_blocks(block) == len(grid.blocks(block))


def test_blend_weights_positive_symmetric_peaked():
    w = blend_weights(64, 48)
    assert w.shape == (64, 48) and w.dtype == np.float32 and (w > 0).all()
    np.testing.assert_array_equal(w, w[::-1, ::-1])
    assert w[32, 24] > 0.99 and w[0, 0] < 1e-3


def test_invalid_grid_is_rejected():
    with pytest.raises(ValueError, match="overlap"):
        TileGrid(10, 10, tile=8, overlap=8)
    with pytest.raises(ValueError, match="block size"):
        TileGrid(10, 10, tile=8, overlap=2).blocks(0)


def test_sides_on_the_raster_edge_do_not_taper():
    grid = TileGrid(100, 300, tile=64, overlap=16)
    first, last = grid.tiles_touching(Box(0, 0, 100, 1))[0], grid.tiles_touching(Box(0, 299, 100, 300))[0]
    w_first, w_last = grid.weights(first), grid.weights(last)
    assert w_first[:32, 0].min() == 1.0 and w_first[40, 63] < 1e-3  # left flush, right tapers
    assert w_last[:32, 63].min() == 1.0 and w_last[40, 0] < 1e-3
