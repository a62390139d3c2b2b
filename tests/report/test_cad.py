"""The CAD drawing's units and its refusal of degrees, on a drawing small enough to check by hand."""

import ezdxf
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from pyproj import CRS
from shapely.geometry import LineString, Polygon

from pipeline.report.cad import (
    APP_ID,
    FIRST_HANDLE,
    LABEL_LAYER,
    EntityStream,
    centreline_layer,
    change_label,
    change_layer,
    drawing_units,
    extended_data,
    label_text,
    layer_name,
    nearest_aci,
    outline_layer,
    write_dxf,
)
from pipeline.report.defects import CENTERLINE_COLUMNS, DEFECT_COLUMNS, DefectTables


def _tables(crs: str) -> DefectTables:
    """One 40 x 2 mm crack with a hole, and its centreline in two pieces."""
    crack = Polygon(
        [(1000.000, 2000.000), (1000.040, 2000.000), (1000.040, 2000.002), (1000.000, 2000.002)],
        [[(1000.010, 2000.0005), (1000.012, 2000.0005), (1000.012, 2000.0015), (1000.010, 2000.0015)]],
    )
    row = {name: None for name in DEFECT_COLUMNS} | {
        "defect_id": 7,
        "class": "crack",
        "severity": "medium",
        "area_m2": crack.area,
        "max_width_mm": 0.4567,
        "mean_width_mm": 0.3,
    }
    defects = gpd.GeoDataFrame([row], geometry=[crack], crs=crs)
    pieces = [
        LineString([(1000.000, 2000.001), (1000.020, 2000.001)]),
        LineString([(1000.020, 2000.001), (1000.040, 2000.001)]),
    ]
    lines = gpd.GeoDataFrame(
        [
            {"defect_id": 7, "segment": i, "length_m": 0.02, "width_mm": 0.3 + i / 10, "width_method": "image"}
            for i in (1, 2)
        ],
        geometry=pieces,
        crs=crs,
    )[CENTERLINE_COLUMNS]
    return DefectTables(defects, lines, pd.DataFrame(), CRS.from_user_input(crs))


def test_a_drawing_in_us_survey_feet_says_so_and_keeps_every_vertex(tmp_path):
    path = tmp_path / "defects.dxf"
    assert write_dxf(path, _tables("EPSG:2263"), None, 0.001, {"structure_id": "BR-0042"})  # NY Long Island, ftUS
    doc = ezdxf.readfile(path)
    assert (doc.header["$INSUNITS"], doc.header["$MEASUREMENT"]) == (21, 0)  # US survey feet, imperial
    assert doc.header.custom_vars.get("CRS") == "EPSG:2263" and doc.header.custom_vars.get("STRUCTURE_ID") == "BR-0042"
    outlines = doc.modelspace().query(f'LWPOLYLINE[layer=="{outline_layer("crack", "medium")}"]')
    assert sorted(len(p) for p in outlines) == [4, 4] and all(p.closed for p in outlines)  # exterior and hole
    assert {tuple(round(v, 6) for v in p.vertices_in_wcs().__next__())[:2] for p in outlines} == {
        (1000.0, 2000.0),
        (1000.01, 2000.0005),
    }
    pieces = doc.modelspace().query(f'LWPOLYLINE[layer=="{centreline_layer("medium")}"]')
    assert [p.closed for p in pieces] == [False, False]
    assert [dict(zip(t[::2], t[1::2], strict=True)) for t in ([v for _, v in p.get_xdata(APP_ID)] for p in pieces)] == [
        {"defect_id": 7, "segment": 1, "class": "crack", "severity": "medium", "width_mm": 0.4, "length_m": 0.02},
        {"defect_id": 7, "segment": 2, "class": "crack", "severity": "medium", "width_mm": 0.5, "length_m": 0.02},
    ]
    (text,) = doc.modelspace().query("TEXT")
    assert text.dxf.text == "7  0.46 mm" and text.dxf.height == pytest.approx(0.012)
    assert (doc.header["$EXTMIN"][0], doc.header["$EXTMAX"][0]) == pytest.approx((1000.0, 1000.04))


def test_degrees_make_no_drawing_and_retire_an_old_one(tmp_path):
    path = tmp_path / "defects.dxf"
    path.write_text("an older survey's drawing")
    assert not write_dxf(path, _tables("EPSG:4326"), None, 1e-8)
    assert not path.exists()  # never a drawing in metres left beside a report that has none


@pytest.mark.parametrize(
    ("crs", "units"), [("EPSG:32633", 6), ("EPSG:2056", 6), ("EPSG:2263", 21), ("EPSG:2222", 2), ("EPSG:4326", None)]
)
def test_drawing_units_follow_the_crs(crs, units):
    assert drawing_units(CRS.from_user_input(crs)) == units


def test_layer_names_colours_and_labels():
    assert layer_name("crack", "below resolution") == "CRACK-BELOW_RESOLUTION"
    assert nearest_aci("#ff0000") == 1 and nearest_aci("#d7191c") in (1, 240, 10, 12, 14)
    spall = pd.Series({"defect_id": 3, "max_width_mm": float("nan"), "severity": "high", "area_m2": 0.03125})
    assert label_text(spall) == "3  0.0312 m²"
    assert label_text(pd.Series(dict(spall) | {"severity": "unmeasured"})) == "3  (width not measured)"
    nan = float("nan")
    widened = pd.Series({"change_id": 4, "status": "widened", "delta_max_width_mm": 0.123, "delta_length_m": -0.01})
    assert change_label(widened) == "4  widened +0.12 mm"
    new = pd.Series({"change_id": 1, "status": "new", "delta_max_width_mm": nan, "delta_length_m": nan})
    assert change_label(new) == "1  new"
    assert change_layer("not seen (too dark or blurred)") == "CHANGE-NOT_SEEN_TOO_DARK_OR_BLURRED"


def test_streamed_entities_are_the_tags_ezdxf_writes_for_them():
    """The drawing's entities are streamed as text: tag for tag what ezdxf's own entities export
    (handles aside), so every CAD program that reads ezdxf's drawings reads these."""
    from ezdxf.enums import TextEntityAlignment
    from ezdxf.lldxf.tagwriter import TagCollector

    doc = ezdxf.new("R2010")
    doc.appids.add(APP_ID)
    space = doc.modelspace()
    ring = [(500000.087, 4999999.5), (500000.1, 4999999.25), (500000.125, 4999999.0)]
    polyline = space.add_lwpolyline(ring, close=True, dxfattribs={"layer": "CRACK-HIGH"})
    values = [(1000, "defect_id"), (1071, 7), (1000, "class"), (1000, "crack"), (1000, "max_width_mm"), (1040, 0.4567)]
    polyline.set_xdata(APP_ID, values)
    text = space.add_text("7  0.46 mm", height=0.012, dxfattribs={"layer": LABEL_LAYER})
    text.set_placement((1.5, 2.25), align=TextEntityAlignment.MIDDLE_LEFT)
    expected = []
    for entity in (polyline, text):
        collector = TagCollector(dxfversion=doc.dxfversion)
        entity.export_dxf(collector)
        expected += [(tag.code, tag.value) for tag in collector.tags if tag.code != 5]

    stream = EntityStream(space.block_record_handle)
    data = extended_data(
        {"defect_id": np.int64(7), "class": "crack", "mean_width_mm": float("nan"), "max_width_mm": 0.4567}
    )
    stream.polyline("CRACK-HIGH", np.array(ring), True, data)
    stream.text(LABEL_LAYER, "7  0.46 mm", (1.5, 2.25), 0.012)
    stream.file.seek(0)
    lines = stream.file.read().splitlines()
    streamed = [(int(code), value) for code, value in zip(lines[::2], lines[1::2], strict=True) if int(code) != 5]
    assert [code for code, _ in streamed] == [code for code, _ in expected]
    for (code, value), (_, want) in zip(streamed, expected, strict=True):
        assert type(want)(value) == want, code  # the same value, as the type ezdxf gives it
    handles = [int(value, 16) for code, value in zip(lines[::2], lines[1::2], strict=True) if int(code) == 5]
    assert handles == [FIRST_HANDLE, FIRST_HANDLE + 1] and stream.next_handle == FIRST_HANDLE + 2
    stream.close()


def test_the_cad_bench_draws_the_same_entities_both_ways(tmp_path, monkeypatch):
    import json
    import runpy

    from tests.conftest import REPO

    out = tmp_path / "cad_speed.json"
    monkeypatch.syspath_prepend(str(REPO / "bench"))  # the bench imports its neighbour machine.py
    monkeypatch.setattr("sys.argv", ["cad_speed.py", "--defects", "30", "--out", str(out)])
    runpy.run_path(str(REPO / "bench" / "cad_speed.py"), run_name="__main__")
    (row,) = json.loads(out.read_text())["rows"]
    assert row["streamed"]["entities"] == row["entity_by_entity"]["entities"] == 30 * 12  # outline, 10 pieces, label
