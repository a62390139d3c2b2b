"""The cracks layer: a crack's pieces (linked across a faint stretch, or a network cut to be measured)
as the one crack an inspection record lists: its length, widest width, rating and line."""

import json
import sqlite3
from contextlib import closing

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

from pipeline.config import ReportConfig
from pipeline.report.build import report_survey
from pipeline.report.cracks import CRACK_COLUMNS, cracks_of
from pipeline.report.defects import build_defects
from tests.conftest import write_mask_survey, write_raster
from tests.report.test_pieces import CLASSES, map_cracking, photographed


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A crack the mask broke by a 10-px gap, across two cuts of the 256-px squares (four pieces, one
    crack), a 900-px network cut into 20 pieces (one crack), a lone short crack and a spall;
    photographed with blur and noise."""
    root = tmp_path_factory.mktemp("cracks")
    mask = np.zeros((1400, 1000), np.uint8)
    mask[50:54, 40:400] = 1  # a 4-px crack ...
    mask[50:54, 410:700] = 1  # ... that fades for 10 px
    mask[200:1100, 50:950] = map_cracking(900)[:, :]
    mask[1200:1202, 100:180] = 1  # a lone 2-px crack
    mask[1250:1290, 600:660] = 2  # a spall
    tags = {"MSAF_CLASSES": json.dumps(CLASSES)}
    mask_path = write_raster(root / "mask.tif", mask[None], nodata=255, tags=tags)
    image_path = write_raster(root / "ortho.tif", photographed(mask))
    return build_defects(mask_path, None, CLASSES, ReportConfig(max_piece_px=256), image_path)


def test_each_crack_is_one_row_of_its_pieces(tables):
    defects, cracks = tables.defects, cracks_of(tables.defects, tables.centerlines)
    pieces = defects[defects["class"] == "crack"]
    assert list(cracks.columns) == [*CRACK_COLUMNS, "geometry"]
    assert len(cracks) == pieces["crack_id"].nunique() == 3  # the broken crack, the network, the lone one
    assert cracks["crack_id"].tolist() == sorted(pieces["crack_id"].unique())
    assert sorted(cracks["pieces"]) == [1, 4, 20]
    for crack in cracks.itertuples():
        own = pieces[pieces["crack_id"] == crack.crack_id]
        assert crack.defect_ids == ",".join(str(i) for i in sorted(own["defect_id"]))
        assert crack.length_m == pytest.approx(own["length_m"].sum())
        assert crack.max_width_mm == own["max_width_mm"].max()
        assert crack.severity == own.loc[own["max_width_mm"].idxmax(), "severity"]
        assert crack.area_m2 == pytest.approx(own["area_m2"].sum())
        weighted = np.average(own["mean_width_mm"], weights=own["length_m"])
        assert crack.mean_width_mm == pytest.approx(weighted)
        # its line is its pieces' centrelines, as long as the length measured (staircases simplified)
        assert crack.geometry.geom_type == "MultiLineString"
        assert crack.geometry.length == pytest.approx(crack.length_m, rel=0.06)
    broken = cracks[cracks["pieces"] == 4].iloc[0]
    assert broken.length_m == pytest.approx(0.650, abs=0.012)  # 360 + 290 px drawn, the gap not counted
    assert len(broken.geometry.geoms) == 2  # one line each side of the gap: the two cuts are joined
    # the gap stays a gap in its line: nothing drawn over the 10 px where the mask lost it
    gap = shapely.box(500000 + 0.4015, 5000000 - 0.054, 500000 + 0.4085, 5000000 - 0.050)
    assert not broken.geometry.intersects(gap) and broken.geometry.distance(gap) < 0.003
    network = cracks[cracks["pieces"] == 20].iloc[0]
    assert network.crack_type == "map" and network.length_m == pytest.approx(2 * 9 * 0.9, rel=0.01)
    assert _gaps_under(network.geometry, 0.005) == []  # every cut joined: parts meet only at junctions
    assert network.mean_width_mm == pytest.approx(3.0, abs=0.5)
    assert "spall" not in set(cracks["class"])


def _gaps_under(lines, limit: float) -> list[float]:
    """Distances under ``limit`` between the ends of different parts of ``lines`` that do not meet."""
    from scipy.spatial import cKDTree

    parts = list(lines.geoms)
    ends = np.array([[part.coords[0], part.coords[-1]] for part in parts]).reshape(-1, 2)
    part_of = np.repeat(np.arange(len(parts)), 2)
    pairs = cKDTree(ends).query_pairs(limit, output_type="ndarray")
    gaps = np.hypot(*(ends[pairs[:, 0]] - ends[pairs[:, 1]]).T)
    return sorted(gaps[(part_of[pairs[:, 0]] != part_of[pairs[:, 1]]) & (gaps > 0)].tolist())


def test_a_cut_is_joined_in_the_cracks_line_and_a_one_pixel_gap_is_not(tmp_path):
    """One crack over four pieces: two cuts of the 256-px squares, and a 1-px column where the mask
    lost it (linked across). Its line is drawn across the cuts, not across the gap."""
    mask = np.zeros((120, 600), np.uint8)
    mask[50:54, 20:290] = 1
    mask[50:54, 291:580] = 1  # column 290: the mask's gap
    mask_path = write_raster(tmp_path / "mask.tif", mask[None], nodata=255, tags={"MSAF_CLASSES": json.dumps(CLASSES)})
    tables = build_defects(mask_path, None, CLASSES, ReportConfig(max_piece_px=256, min_area_m2=0))
    (crack,) = cracks_of(tables.defects, tables.centerlines).itertuples()
    assert crack.pieces == 4 and len(crack.geometry.geoms) == 2
    left, right = sorted(crack.geometry.geoms, key=lambda line: line.bounds[0])
    assert left.bounds[2] < 500000 + 0.2905 < right.bounds[0]  # nothing drawn over the gap's column
    assert left.bounds[2] - left.bounds[0] > 0.26 and right.bounds[2] - right.bounds[0] > 0.28  # across the cuts


def test_the_cracks_layer_is_in_the_geopackage_styled_and_typed_also_when_empty(tmp_path):
    mask = np.zeros((300, 300), np.uint8)
    mask[100:103, 20:130] = 1  # one crack the mask lost for 10 px: two pieces
    mask[100:103, 140:280] = 1
    mask[200:240, 100:140] = 2
    folder = write_mask_survey(tmp_path / "one", mask)
    report_survey(folder, ReportConfig())
    layers = dict(pyogrio.list_layers(folder / "defects.gpkg"))
    assert layers["cracks"] == "MultiLineString"
    cracks = gpd.read_file(folder / "defects.gpkg", layer="cracks")
    assert len(cracks) == 1 and cracks.crs.to_epsg() == 32633
    assert cracks["length_m"].iloc[0] == pytest.approx(0.25, abs=0.005) and cracks["pieces"].iloc[0] == 2
    assert shapely.get_num_geometries(cracks.geometry.iloc[0]) == 2
    page = (folder / "report.html").read_text()
    assert "2 pieces of crack mask are 1 cracks" in page and "the cracks layer of defects.gpkg" in page
    with closing(sqlite3.connect(folder / "defects.gpkg")) as con:
        styled = {row[0] for row in con.execute("SELECT f_table_name FROM layer_styles")}
    assert "cracks" in styled
    empty = write_mask_survey(tmp_path / "empty", np.zeros((64, 64), np.uint8))
    report_survey(empty, ReportConfig())
    assert dict(pyogrio.list_layers(empty / "defects.gpkg"))["cracks"] == "MultiLineString"
    assert len(gpd.read_file(empty / "defects.gpkg", layer="cracks")) == 0
