"""Exact defect geometry and measurements on drawn masks with known answers."""

import math

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from skimage.draw import line

from pipeline.config import ReportConfig
from pipeline.report.defects import build_defects
from pipeline.report.vectorize import vectorize
from tests.conftest import write_raster

CLASSES = ["background", "crack", "spall"]


def write_mask(path, mask: np.ndarray, gsd: float, crs: str = "EPSG:32633"):
    return write_raster(
        path, np.asarray(mask, np.uint8)[None], crs=crs, transform=from_origin(400000, 5000000, gsd, gsd), nodata=255
    )


def tables_for(tmp_path, mask, gsd, **cfg):
    path = write_mask(tmp_path / "mask.tif", mask, gsd)
    return build_defects(path, None, CLASSES, ReportConfig(min_area_m2=0, simplify_m=0, **cfg))


def test_straight_crack_length_and_width(tmp_path):
    mask = np.zeros((60, 260), np.uint8)
    mask[29:32, 30:230] = 1  # 200 px long, 3 px wide
    (crack,) = tables_for(tmp_path, mask, 0.001).defects.itertuples()
    assert crack.length_m == pytest.approx(0.200, rel=0.02)
    assert crack.mean_width_mm == pytest.approx(3.0, abs=1.0) and crack.max_width_mm == pytest.approx(3.0, abs=1.0)
    assert crack.area_m2 == pytest.approx(600 * 1e-6, rel=1e-3)  # ground m²: UTM grid is 0.03 % short here
    assert crack.orientation_deg == pytest.approx(90, abs=1)  # east-west
    assert crack.severity == "high"  # 3 mm > 1.25 mm


def test_square_spall_area(tmp_path):
    mask = np.zeros((100, 100), np.uint8)
    mask[20:70, 30:80] = 2  # 50 x 50 px at 2 mm
    tables = tables_for(tmp_path, mask, 0.002)
    (spall,) = tables.defects.itertuples()
    assert spall.area_m2 == pytest.approx(0.01, rel=1e-3) and spall.geometry.area == pytest.approx(0.01)
    assert np.isnan(spall.length_m)
    assert spall.severity == "medium"  # 0.005 <= 0.01 <= 0.018
    minx, miny, maxx, maxy = spall.geometry.bounds
    assert (minx, maxy) == pytest.approx((400000 + 30 * 0.002, 5000000 - 20 * 0.002))
    assert (maxx - minx, maxy - miny) == pytest.approx((0.1, 0.1))


def test_diagonal_crack(tmp_path):
    mask = np.zeros((200, 200), np.uint8)
    rr, cc = line(20, 20, 170, 170)
    for dr in (-1, 0, 1):
        mask[rr + dr, cc] = 1
    (crack,) = tables_for(tmp_path, mask, 0.001).defects.itertuples()
    assert crack.length_m == pytest.approx(150 * math.sqrt(2) * 0.001, rel=0.03)
    assert crack.orientation_deg == pytest.approx(135, abs=2)  # running north-west to south-east


def test_branching_crack_sums_its_branches(tmp_path):
    mask = np.zeros((200, 240), np.uint8)
    mask[99:102, 20:220] = 1  # 200 px trunk
    mask[20:100, 119:122] = 1  # 80 px branch up from the middle
    tables = tables_for(tmp_path, mask, 0.001)
    (crack,) = tables.defects.itertuples()
    assert crack.length_m == pytest.approx(0.280, rel=0.03)
    from shapely import line_merge, unary_union

    pieces = tables.centerlines
    assert set(pieces["defect_id"]) == {1} and pieces["segment"].tolist() == list(range(1, len(pieces) + 1))
    assert pieces["length_m"].sum() == pytest.approx(crack.length_m, rel=0.03)
    whole = line_merge(unary_union(list(pieces.geometry)))
    assert whole.length == pytest.approx(crack.length_m, rel=0.02)
    assert len(whole.geoms) == 3  # three branches meet at the junction


def test_severity_thresholds_follow_config(tmp_path):
    mask = np.zeros((40, 120), np.uint8)
    mask[10, 10:110] = 1  # 1 px wide at 0.2 mm GSD = 0.2 mm
    mask[25:27, 10:110] = 1  # 2 px = 0.4 mm
    defects = tables_for(tmp_path, mask, 0.0002).defects.sort_values("max_width_mm")
    assert defects["severity"].tolist() == ["low", "medium"]


@pytest.mark.parametrize("strip_rows", [1, 7, 64, 10_000])
def test_windowed_vectorising_equals_whole_raster(tmp_path, strip_rows):
    rng = np.random.default_rng(0)
    mask = np.zeros((300, 280), np.uint8)
    for _ in range(25):  # random walks: cracks that wander across many strips
        r, c = rng.integers(0, 300), rng.integers(0, 280)
        for _ in range(200):
            r, c = np.clip(r + rng.integers(-1, 2), 0, 299), np.clip(c + rng.integers(-1, 2), 0, 279)
            mask[r, c] = 1
    mask[200:240, 20:70] = 2
    mask[210:220, 30:40] = 0  # a spall with a hole
    path = write_mask(tmp_path / "mask.tif", mask, 0.001)
    with rasterio.open(path) as ds:
        whole = vectorize(ds, [1, 2], strip_rows=10_000)
        windowed = vectorize(ds, [1, 2], strip_rows=strip_rows)
    assert len(windowed) == len(whole) > 5
    for a, b in zip(windowed, whole, strict=True):
        assert a.class_id == b.class_id and a.pixels == b.pixels
        assert a.geometry.equals(b.geometry)
    cfg = ReportConfig(min_area_m2=0, simplify_m=0, strip_rows=strip_rows)
    lengths = build_defects(path, None, CLASSES, cfg).defects["length_m"].fillna(-1).tolist()
    reference = build_defects(path, None, CLASSES, ReportConfig(min_area_m2=0, simplify_m=0)).defects
    assert lengths == reference["length_m"].fillna(-1).tolist()
