"""The COGs laid out from tiles compressed once read back exactly, carry what GDAL's COG driver
writes (georeference, nodata, tags, band description, overviews) and have the COG layout."""

import struct

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import tifffile
from rasterio.crs import CRS
from rasterio.transform import from_origin

import pipeline.raster.cogfile as cogfile
from pipeline.raster.cog import GeoTiffSink
from pipeline.raster.grid import Box

TRANSFORM = from_origin(500000.0, 5000000.0, 0.001, 0.001)
UTM = CRS.from_epsg(32633)
LOCAL_CRS = CRS.from_wkt(
    'LOCAL_CS["bridge deck grid",UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)


def _write(path, data, block, crs=UTM, order=1, pool=None):
    path.parent.mkdir(exist_ok=True)
    height, width = data.shape
    sink = GeoTiffSink(path, width, height, crs, TRANSFORM, 255, description="class ids", pool=pool)
    cores = [
        Box(r, c, min(r + block, height), min(c + block, width))
        for r in range(0, height, block)
        for c in range(0, width, block)
    ]
    for core in cores[::order]:  # blocks arrive in any order
        sink.write(core, data[core.row0 : core.row1, core.col0 : core.col1])
    sink.build_cog({"MSAF_LAYER": "mask"})
    return sink.publish()


@pytest.mark.parametrize(
    ("shape", "block", "order"), [((1300, 1700), 300, 1), ((2100, 1030), 1024, -1), ((600, 700), 4096, 1)]
)
def test_a_layer_reads_back_pixel_for_pixel_with_nearest_overviews(tmp_path, shape, block, order):
    rng = np.random.default_rng(block)
    data = rng.integers(0, 4, shape).astype(np.uint8)
    data[:37] = 255  # nodata rows
    path = _write(tmp_path / "mask.tif", data, block, order=order)
    with rasterio.open(path) as dataset:
        np.testing.assert_array_equal(dataset.read(1), data)
        factors = dataset.overviews(1)
        assert factors == cogfile_factors(shape)
        assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert dataset.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert dataset.block_shapes == [(512, 512)]
    for level, factor in enumerate(factors):
        with rasterio.open(path, overview_level=level) as overview:
            np.testing.assert_array_equal(overview.read(1), data[::factor, ::factor])
    assert not list(tmp_path.glob(".*partial*"))  # working files gone


def cogfile_factors(shape):
    from pipeline.raster.cog import overview_factors

    return overview_factors(shape[1], shape[0])


@pytest.mark.parametrize("crs", [CRS.from_epsg(32633), CRS.from_epsg(2056), LOCAL_CRS, None])
def test_georeference_and_metadata_are_what_gdals_cog_driver_writes(tmp_path, crs):
    data = np.random.default_rng(1).integers(0, 3, (900, 1100)).astype(np.uint8)
    ours = _write(tmp_path / "ours.tif", data, 512, crs=crs)
    plain = tmp_path / "plain.tif"
    profile = {"driver": "GTiff", "count": 1, "dtype": "uint8", "width": 1100, "height": 900, "nodata": 255}
    with rasterio.open(plain, "w", **profile, crs=crs, transform=TRANSFORM) as dataset:
        dataset.write(data, 1)
        dataset.update_tags(MSAF_LAYER="mask")
        dataset.set_band_description(1, "class ids")
    gdal = tmp_path / "gdal.tif"
    rasterio.shutil.copy(plain, gdal, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE="512")
    with rasterio.open(ours) as a, rasterio.open(gdal) as b:
        assert a.crs == b.crs
        assert (a.crs.to_wkt() if a.crs else None) == (b.crs.to_wkt() if b.crs else None)
        assert a.transform == b.transform
        assert a.nodata == b.nodata == 255
        assert a.tags() == b.tags()
        assert a.descriptions == b.descriptions == ("class ids",)
        assert a.overviews(1) == b.overviews(1)
        assert a.tags(ns="IMAGE_STRUCTURE") == b.tags(ns="IMAGE_STRUCTURE")
        np.testing.assert_array_equal(a.read(1), b.read(1))


def test_the_layout_is_a_cogs_ifds_first_smallest_overview_data_first_framed_tiles(tmp_path):
    data = np.random.default_rng(2).integers(0, 3, (2600, 2300)).astype(np.uint8)
    path = _write(tmp_path / "mask.tif", data, 1024)
    raw = path.read_bytes()
    assert raw[8:51] == b"GDAL_STRUCTURAL_METADATA_SIZE=000140 bytes\n"
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        assert [p.shape for p in pages] == [(2600, 2300), (1300, 1150), (650, 575), (325, 288)]
        ifds = [p.offset for p in pages]
        assert ifds == sorted(ifds) and all(offset % 2 == 0 for offset in ifds)
        firsts = [min(p.dataoffsets) for p in pages]
        lasts = [max(p.dataoffsets) for p in pages]
        assert max(ifds) < min(firsts)  # every IFD before any tile
        assert all(firsts[i] > lasts[i + 1] for i in range(len(pages) - 1))  # smaller overviews first
        for page in pages:
            offsets, counts = list(page.dataoffsets), list(page.databytecounts)
            assert offsets == sorted(offsets)  # row-major
            for offset, count in zip(offsets, counts, strict=True):
                assert struct.unpack("<I", raw[offset - 4 : offset])[0] == count  # size leader
                assert raw[offset + count : offset + count + 4] == raw[offset + count - 4 : offset + count]  # trailer


def test_a_layer_past_4_gib_is_written_as_bigtiff(tmp_path, monkeypatch):
    monkeypatch.setattr(cogfile, "CLASSIC_LIMIT", 1000)  # as if the tiles did not fit a classic TIFF
    data = np.random.default_rng(3).integers(0, 3, (1200, 700)).astype(np.uint8)
    path = _write(tmp_path / "mask.tif", data, 500)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    with rasterio.open(path) as dataset:
        np.testing.assert_array_equal(dataset.read(1), data)
        assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert dataset.crs == CRS.from_epsg(32633)


def test_tiles_no_block_wrote_hold_nodata(tmp_path):
    sink = GeoTiffSink(tmp_path / "mask.tif", 1500, 1000, CRS.from_epsg(32633), TRANSFORM, 255)
    sink.write(Box(0, 0, 600, 700), np.ones((600, 700), np.uint8))
    sink.build_cog({})
    path = sink.publish()
    with rasterio.open(path) as dataset:
        expected = np.full((1000, 1500), 255, np.uint8)
        expected[:600, :700] = 1
        np.testing.assert_array_equal(dataset.read(1), expected)


def test_tiles_compressed_by_a_pool_give_the_same_file_byte_for_byte(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    data = np.random.default_rng(4).integers(0, 3, (1700, 1300)).astype(np.uint8)
    alone = _write(tmp_path / "alone" / "mask.tif", data, 600)
    with ThreadPoolExecutor(3) as pool:
        pooled = _write(tmp_path / "pooled" / "mask.tif", data, 600, pool=pool)
    assert pooled.read_bytes() == alone.read_bytes()
