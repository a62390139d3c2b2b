"""Exact defect geometry and measurements on drawn masks with known answers."""

import math

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from skimage.draw import line

from pipeline.config import ReportConfig
from pipeline.errors import MsafError
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
        in_workers = vectorize(ds, [1, 2], strip_rows=strip_rows, workers=2)  # strips in 2 processes
    assert len(windowed) == len(whole) > 5
    for a, b in zip(windowed, whole, strict=True):
        assert a.class_id == b.class_id and a.pixels == b.pixels
        assert a.geometry.equals(b.geometry)
    assert [(c.class_id, c.pixels, c.geometry.wkb) for c in in_workers] == [
        (c.class_id, c.pixels, c.geometry.wkb) for c in windowed
    ]
    cfg = ReportConfig(min_area_m2=0, simplify_m=0, strip_rows=strip_rows)
    lengths = build_defects(path, None, CLASSES, cfg).defects["length_m"].fillna(-1).tolist()
    reference = build_defects(path, None, CLASSES, ReportConfig(min_area_m2=0, simplify_m=0)).defects
    assert lengths == reference["length_m"].fillna(-1).tolist()


def test_a_blob_has_the_same_centreline_length_in_utm_and_after_a_warp_to_web_mercator(tmp_path):
    """A wide crack region (60 x 80 px at 1 mm), 220 km off its UTM zone's central meridian, so a
    nearest warp to EPSG:3857 turns its straight edges into 2° staircases: every stair step used to
    grow a skeleton spur (0.022 m of centreline became 0.162 m). Spurs shorter than the crack is
    wide are pruned and each end is carried to the mask's edge, so both measure the block's long
    axis, 80 mm."""
    import json

    import geopandas as gpd
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from pipeline.report.build import report_survey

    mask = np.zeros((140, 160), np.uint8)
    mask[40:100, 40:120] = 1
    lengths = {}
    for crs in ("EPSG:32633", "EPSG:3857"):
        folder = tmp_path / crs.replace(":", "")
        folder.mkdir()
        utm = {
            "driver": "GTiff",
            "width": 160,
            "height": 140,
            "count": 1,
            "dtype": "uint8",
            "nodata": 255,
            "crs": "EPSG:32633",
            "transform": from_origin(720000, 5000000, 0.001, 0.001),
        }
        data, profile = mask, utm
        if crs != "EPSG:32633":
            transform, width, height = calculate_default_transform(
                utm["crs"], crs, 160, 140, 720000, 4999999.86, 720000.16, 5000000
            )
            data = np.zeros((height, width), np.uint8)
            reproject(
                mask,
                data,
                src_transform=utm["transform"],
                src_crs=utm["crs"],
                dst_transform=transform,
                dst_crs=crs,
                resampling=Resampling.nearest,
            )
            profile = utm | {"crs": crs, "transform": transform, "width": width, "height": height}
        with rasterio.open(folder / "mask.tif", "w", **profile) as dst:
            dst.write(data, 1)
            dst.update_tags(MSAF_CLASSES=json.dumps(["background", "crack"]))
        report_survey(folder, ReportConfig())
        (length,) = gpd.read_file(folder / "defects.gpkg", layer="defects")["length_m"]
        lengths[crs] = length
    assert lengths["EPSG:32633"] == pytest.approx(0.080, rel=0.05)
    assert lengths["EPSG:3857"] == pytest.approx(lengths["EPSG:32633"], rel=0.05)


def test_a_pruned_centreline_keeps_real_branches_and_the_main_path():
    """Pruning removes only spurs: a T of 3 px cracks keeps both arms; a plus-shaped blob keeps a path."""
    from skimage.morphology import skeletonize

    from pipeline.report.measure import prune_spurs

    tee = np.zeros((120, 200), bool)
    tee[59:62, 10:190] = True
    tee[10:60, 99:102] = True
    assert prune_spurs(skeletonize(tee), tee).sum() >= 0.95 * skeletonize(tee).sum()
    plus = np.zeros((60, 60), bool)
    plus[20:40, 5:55] = plus[5:55, 20:40] = True  # arms shorter than the blob is wide
    pruned = prune_spurs(skeletonize(plus), plus)
    assert 30 <= pruned.sum() <= 60  # one path through the middle, not a dot and not all four arms


def test_every_written_polygon_is_valid_after_rounding(tmp_path):
    """A valid polygon whose spike passes 4e-11° (4 µm) from its own edge (rounded to GeoJSON's
    quarter-pixel decimals, 9 at 1 mm, the spike touches the edge: a self-intersection) and a
    polygon that crosses itself: both writers snap to the grid they write and write valid geometry."""
    import geopandas as gpd
    import pyogrio
    import shapely
    from shapely.geometry import Polygon

    from pipeline.report.outputs import write_geojson, write_geopackage

    x0, y0, d = 13.727967041, 45.146392876, 1e-7  # a ~8 x 11 mm square in lon/lat
    spiked = Polygon([(x0, y0), (x0 + d, y0), (x0 + d, y0 + d), (x0 + d / 2, y0 + 4e-11), (x0, y0 + d)])
    assert spiked.is_valid and not shapely.set_precision(spiked, 1e-9, mode="pointwise").is_valid
    bowtie = Polygon([(x0, y0), (x0 + d, y0 + d), (x0 + d, y0), (x0, y0 + d)])  # crosses itself
    frame = gpd.GeoDataFrame({"defect_id": [1, 2]}, geometry=[spiked, bowtie], crs="EPSG:4326")
    write_geojson(tmp_path / "d.geojson", frame, "defects", pixel_m=0.001)
    write_geopackage(tmp_path / "d.gpkg", {"defects": frame})
    for path in (tmp_path / "d.geojson", tmp_path / "d.gpkg"):
        back = pyogrio.read_dataframe(path, layer="defects")
        assert len(back) == 2 and back.geometry.is_valid.all(), path
        areas = shapely.area(back.geometry.to_numpy())  # in degrees², as the shapes were drawn
        assert areas[0] == pytest.approx(spiked.area, rel=0.05)
        assert areas[1] == pytest.approx(d * d / 2, rel=0.05)  # both triangles of the bow tie


def test_a_class_the_survey_does_not_name_is_one_error_from_a_worker_too(tmp_path):
    mask = np.zeros((40, 30), np.uint8)
    mask[35, 3] = 7  # in the last strip a worker reads
    path = write_mask(tmp_path / "mask.tif", mask, 0.001)
    with rasterio.open(path) as ds, pytest.raises(MsafError, match="holds class id 7, but its survey names only 3"):
        vectorize(ds, [1, 2], strip_rows=8, num_classes=3, workers=2)
