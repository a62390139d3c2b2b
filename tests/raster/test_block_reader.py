"""The block reader: every block's pixels and footprint exactly as GDAL reads them, each strip of rows
on one decoding thread (so a halo's source blocks come from that thread's GDAL block cache), and the
rows a block shares with the block below handed down rather than decoded again."""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from pipeline.config import ScalingConfig
from pipeline.raster.grid import TileGrid
from pipeline.raster.source import BlockReader, open_source
from tests.conftest import write_raster


def _jpeg_orthomosaic(path, height: int, width: int):
    """A JPEG-tiled RGB GeoTIFF with an internal footprint mask cutting a corner off, as drone software writes."""
    rows, cols = np.mgrid[0:height, 0:width]
    rgb = np.stack([(rows * 7 + cols * 3) % 256, (rows * cols) % 251, (cols * 5) % 241]).astype(np.uint8)
    write_raster(path, rgb, tiled=True, blockxsize=128, blockysize=128, compress="jpeg", photometric="YCBCR")
    with rasterio.open(path, "r+") as ds:
        footprint = np.where(rows + cols > 200, 255, 0).astype(np.uint8)
        ds.write_mask(footprint)
    return path


def _assert_gdals(ds, box, pixels: np.ndarray, valid: np.ndarray) -> None:
    """The block's pixels and footprint are what GDAL reads for its window in one call."""
    window = Window(box.col0, box.row0, box.width, box.height)
    np.testing.assert_array_equal(pixels, ds.read((1, 2, 3), window=window))
    np.testing.assert_array_equal(valid, ds.dataset_mask(window=window) > 0)


def _record_strips(reader: BlockReader, record) -> None:
    """Call ``record(row0, row1)`` (on the decoding thread) before each strip the reader decodes."""
    read_strip = reader._read_strip

    def recording(box, pixels, valid, row0, row1):
        record(row0, row1)
        read_strip(box, pixels, valid, row0, row1)

    reader._read_strip = recording


def test_blocks_read_in_any_order_of_threads_are_gdals_pixels_and_each_strip_stays_on_one_thread(tmp_path):
    ortho = _jpeg_orthomosaic(tmp_path / "ortho.tif", 700, 900)
    info = open_source(ortho, ScalingConfig())
    grid = TileGrid(info.height, info.width, 96, 24)  # blocks of 256 with halos: strips start mid source block
    reader = BlockReader(info, threads=3)
    threads_of_strip: dict[int, set[int]] = defaultdict(set)
    _record_strips(reader, lambda row0, row1: threads_of_strip[row0 // reader.strip_rows].add(threading.get_ident()))
    blocks = list(grid.blocks(256))
    outside = 0
    try:
        with rasterio.open(ortho) as ds:
            for block in blocks:
                pixels, valid = reader.read(block.region)
                _assert_gdals(ds, block.region, pixels, valid)
                outside += int((~valid).sum())
    finally:
        reader.close()
    assert len(blocks) == 12 and outside > 0  # the footprint's cut corner was read too
    assert reader.strip_rows == 256 and len(threads_of_strip) == 3  # source rows 0-255, 256-511, 512-699
    assert all(len(threads) == 1 for threads in threads_of_strip.values())  # each on its own thread
    assert len(set().union(*threads_of_strip.values())) == 3


def test_the_rows_a_block_shares_with_the_block_below_are_handed_down_not_decoded_again(tmp_path):
    ortho = _jpeg_orthomosaic(tmp_path / "ortho.tif", 700, 900)
    info = open_source(ortho, ScalingConfig())
    grid = TileGrid(info.height, info.width, 96, 24)
    blocks = list(grid.blocks(256))
    across = 4
    # with 2 bands kept for 4 columns, each is given up before the block below comes, but the last
    # row's two keep the last two bands (that row keeps none for a row below it)
    for kept, handed_down in ((BlockReader.KEPT_BANDS, set(range(across, 12))), (2, {10, 11})):
        reader = BlockReader(info, threads=2)
        reader.KEPT_BANDS = kept
        decoded: list[tuple[int, int]] = []
        _record_strips(reader, lambda row0, row1, decoded=decoded: decoded.append((row0, row1)))
        try:
            with rasterio.open(ortho) as ds:
                for position, block in enumerate(blocks):
                    box = block.region
                    below = blocks[position + across].region if position + across < len(blocks) else None
                    decoded.clear()
                    pixels, valid = reader.read(box, keep_for=below)
                    _assert_gdals(ds, box, pixels, valid)
                    # rows 232-255 (a region's top halo, 24 rows) need the whole source row 0-255 decoded
                    assert (min(decoded)[0] == box.row0) != (position in handed_down), (position, decoded)
                    assert len(reader._bands) <= kept
        finally:
            reader.close()


def _nodata_orthomosaic(path, height: int, width: int):
    """An uncompressed RGB GeoTIFF whose footprint is its nodata value (0 in every band) in a corner."""
    rows, cols = np.mgrid[0:height, 0:width]
    rgb = np.stack([(rows * 7 + cols * 3) % 255 + 1, (rows * cols) % 250 + 1, (cols * 5) % 240 + 1]).astype(np.uint8)
    rgb[:, (rows + cols) < 200] = 0
    return write_raster(path, rgb, nodata=0, tiled=True, blockxsize=128, blockysize=128)


@pytest.mark.parametrize("footprint", ["internal mask", "nodata value"])
def test_a_released_buffer_is_read_into_again_and_nothing_of_the_last_block_stays_in_it(tmp_path, footprint):
    """GDAL's mask is written into the footprint's own bytes (rasterio hands a nodata value's mask
    back as a new array instead); either way a reused buffer holds only the new block."""
    make = _jpeg_orthomosaic if footprint == "internal mask" else _nodata_orthomosaic
    ortho = make(tmp_path / "ortho.tif", 700, 900)
    info = open_source(ortho, ScalingConfig())
    blocks = list(TileGrid(info.height, info.width, 96, 24).blocks(256))
    blocks.sort(key=lambda block: block.region.height * block.region.width, reverse=True)
    reader = BlockReader(info, threads=2)
    try:
        with rasterio.open(ortho) as ds:
            largest, largest_valid = reader.read(blocks[0].region)  # an inner block: every other one fits its buffer
            _assert_gdals(ds, blocks[0].region, largest, largest_valid)
            buffer = largest.base  # the pixels and footprint are cut from one buffer
            assert np.shares_memory(largest_valid, buffer)
            reader.release(largest)
            outside = 0
            for block in reversed(blocks[1:]):  # corners first: the footprint's cut corner is among them
                pixels, valid = reader.read(block.region)
                assert np.shares_memory(pixels, buffer) and np.shares_memory(valid, buffer)
                _assert_gdals(ds, block.region, pixels, valid)
                outside += int((~valid).sum())
                reader.release(pixels)
    finally:
        reader.close()
    assert outside > 0
