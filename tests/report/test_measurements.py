"""Measurements an inspector can sign: crack widths from the image, ground units in any CRS."""

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

from pipeline.config import ReportConfig
from pipeline.report.build import report_survey

MSAF = str(Path(sys.executable).with_name("msaf"))
GSD = 0.001
WIDTHS_MM = (1.5, 2.0, 3.0, 4.0, 6.0)
THIN_MM = 0.6
LENGTH_PX = 500
CLASSES = ["background", "crack"]


def _coverage(height: int, width: int, rows: list[tuple[float, float, float, float, float]], supersample: int = 8):
    """Anti-aliased coverage of straight cracks: (centre row at col 0, slope, width px, col0, col1) each."""
    cover = np.zeros((height, width))
    offsets = (np.arange(supersample) + 0.5) / supersample
    sub_r = (np.arange(height)[:, None] + offsets[None, :]).ravel()
    for centre, slope, width_px, col0, col1 in rows:
        for dc in offsets:
            cols = np.arange(width) + dc
            along = (cols >= col0) & (cols < col1)
            middle = centre + slope * cols
            inside = np.abs(sub_r[:, None] - middle[None, :]) * np.cos(np.arctan(slope)) <= width_px / 2
            cover += (inside.reshape(height, supersample, width).mean(axis=1) * along) / supersample
    return np.clip(cover, 0, 1)


@pytest.fixture(scope="module")
def five_cracks(tmp_path_factory) -> Path:
    """Noisy grey concrete (~150) with five cracks (core ~40) 1.5-6 mm wide and one 0.6 mm, 0.5 m long at
    1 mm GSD, sub-pixel centres, anti-aliased; the mask 2 px wider than each crack on every side."""
    root = tmp_path_factory.mktemp("five")
    height, width = 460, 640
    rng = np.random.default_rng(5)
    specs = [
        (40 + 70 * i + 0.37 * i, 0.012 * (i - 2), w, 70.0, 70.0 + LENGTH_PX)
        for i, w in enumerate((*WIDTHS_MM, THIN_MM))
    ]
    cover = _coverage(height, width, specs)
    grey = 150 + rng.normal(0, 6, (height, width)) + 4 * np.sin(np.arange(width) / 90)[None, :]
    image = grey * (1 - cover) + (40 + rng.normal(0, 4, (height, width))) * cover
    rgb = np.clip(np.stack([image * 1.02, image, image * 0.97]), 0, 255).round().astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    for centre, slope, width_px, col0, col1 in specs:
        wider = _coverage(height, width, [(centre, slope, width_px + 4, col0 - 2, col1 + 2)], supersample=1)
        mask[wider > 0.5] = 1
    transform = from_origin(500000, 5000000, GSD, GSD)
    profile = {"driver": "GTiff", "width": width, "height": height, "crs": "EPSG:32633", "transform": transform}
    with rasterio.open(root / "ortho.tif", "w", count=3, dtype="uint8", **profile) as dst:
        dst.write(rgb)
    survey = root / "survey"
    survey.mkdir()
    with rasterio.open(survey / "mask.tif", "w", count=1, dtype="uint8", nodata=255, **profile) as dst:
        dst.write(mask, 1)
        dst.update_tags(MSAF_CLASSES=json.dumps(CLASSES))
    return root


def test_widths_come_from_the_image_to_sub_pixel_precision(five_cracks):
    result = subprocess.run(
        [MSAF, "report", str(five_cracks / "survey"), "--image", str(five_cracks / "ortho.tif")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    defects = gpd.read_file(five_cracks / "survey" / "defects.gpkg", layer="defects").sort_values(
        "centroid_y", ascending=False
    )
    assert len(defects) == 6 and (defects["width_method"] == "image").all()
    for (_, crack), true_mm in zip(defects.iterrows(), (*WIDTHS_MM, THIN_MM), strict=True):
        assert crack["mean_width_mm"] == pytest.approx(true_mm, abs=max(0.5, 0.15 * true_mm)), crack["mean_width_mm"]
        assert crack["max_width_mm"] >= crack["mean_width_mm"]
        assert crack["max_width_mm"] <= true_mm + max(0.5, 0.25 * true_mm)
    for (_, crack), _true in zip(defects.iloc[:5].iterrows(), WIDTHS_MM, strict=True):
        assert crack["length_m"] == pytest.approx(LENGTH_PX * GSD, rel=0.02)
    # 1.5-6 mm are wider than a pixel and than 1.25 mm: high; 0.6 mm cannot be rated at 1 mm GSD
    assert defects["severity"].tolist() == ["high"] * 5 + ["below resolution"]
    lines = gpd.read_file(five_cracks / "survey" / "defects.gpkg", layer="crack_centerlines")
    assert set(lines["defect_id"]) == set(defects["defect_id"]) and (lines["width_method"] == "image").all()
    widest = lines[lines["defect_id"] == defects.iloc[4]["defect_id"]]
    assert len(widest) >= 20 and widest["width_mm"].median() == pytest.approx(6.0, rel=0.15)
    html = (five_cracks / "survey" / "report.html").read_text()
    assert "below resolution" in html and "0.3 mm: no" in html and "1.25 mm: yes" in html


def test_without_the_image_widths_fall_back_to_the_mask_and_say_so(five_cracks, tmp_path):
    survey = tmp_path / "survey"
    survey.mkdir()
    (survey / "mask.tif").write_bytes((five_cracks / "survey" / "mask.tif").read_bytes())
    report_survey(survey, ReportConfig())
    defects = gpd.read_file(survey / "defects.gpkg", layer="defects")
    assert (defects["width_method"] == "mask").all()
    assert defects["mean_width_mm"].min() > 4  # the mask is 4 px wider than every crack
    assert "come from the mask, not the image" in (survey / "report.html").read_text()


def test_an_image_on_another_grid_is_a_one_line_error(five_cracks, tmp_path):
    with rasterio.open(
        tmp_path / "small.tif",
        "w",
        driver="GTiff",
        width=10,
        height=10,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(0, 0, 1, 1),
    ) as dst:
        dst.write(np.zeros((3, 10, 10), np.uint8))
    result = subprocess.run(
        [MSAF, "report", str(five_cracks / "survey"), "--image", str(tmp_path / "small.tif")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "another grid than the mask" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_web_mercator_gives_the_same_ground_lengths_and_areas(five_cracks, tmp_path):
    """The same defects in EPSG:32633 and warped (nearest) to EPSG:3857 (x1.41 scale at 45° N)."""
    source = five_cracks / "survey" / "mask.tif"
    mercator = tmp_path / "mercator"
    mercator.mkdir()
    with rasterio.open(source) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height, *src.bounds)
        out = np.zeros((height, width), np.uint8)
        reproject(
            rasterio.band(src, 1), out, dst_transform=transform, dst_crs="EPSG:3857", resampling=Resampling.nearest
        )
        profile = src.profile | {"crs": "EPSG:3857", "transform": transform, "width": width, "height": height}
    with rasterio.open(mercator / "mask.tif", "w", **profile) as dst:
        dst.write(out, 1)
        dst.update_tags(MSAF_CLASSES=json.dumps(CLASSES))
    utm = tmp_path / "utm"
    utm.mkdir()
    (utm / "mask.tif").write_bytes(source.read_bytes())
    cfg = ReportConfig()
    report_survey(utm, cfg)
    report_survey(mercator, cfg)
    a = gpd.read_file(utm / "defects.gpkg", layer="defects")
    b = gpd.read_file(mercator / "defects.gpkg", layer="defects")
    assert len(a) == len(b) == 6
    assert b["length_m"].sum() == pytest.approx(a["length_m"].sum(), rel=0.03)
    assert b["area_m2"].sum() == pytest.approx(a["area_m2"].sum(), rel=0.03)
    assert "distorts scale" in (mercator / "report.html").read_text()
    assert "distorts scale" not in (utm / "report.html").read_text()


def test_a_blob_that_thins_to_one_pixel_still_has_a_centreline_along_its_axis():
    """Every crack defect gets a centreline segment (and so a row in crack_centerlines), even a
    compact one whose skeleton is a lone pixel: a one-pixel line through it."""
    from affine import Affine
    from skimage.morphology import disk

    from pipeline.raster.ground import PixelSize
    from pipeline.report.measure import measure_crack

    pixels = np.zeros((13, 13), bool)
    pixels[2:11, 2:11] = disk(4).astype(bool)  # skeletonises to its centre pixel (6, 6)
    transform = Affine(0.001, 0, 500.0, 0, -0.001, 100.0)
    measure = measure_crack(pixels, transform, PixelSize(0.001, 0.001))
    lines = [line for chunk in measure.chunk_lines for line in chunk.geoms]
    assert len(lines) == 1 and measure.centerline.length == pytest.approx(0.001)  # one pixel long
    centre = transform @ (6.5, 6.5)
    assert lines[0].centroid.x == pytest.approx(centre[0]) and lines[0].centroid.y == pytest.approx(centre[1])
