"""Element condition states (AASHTO MBEI defect 1130) from a survey's cracks: every rule on a drawn
deck whose cracks have known widths, the quantities against the surveyed pixels, a decimated read."""

from __future__ import annotations

import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pydantic import ValidationError

from pipeline.config import ConditionConfig, ElementsConfig, ReportConfig, SeverityConfig
from pipeline.report import condition
from pipeline.report.condition import STATE_MEANINGS, assess_condition
from pipeline.styles import CONDITION_COLOURS
from tests.conftest import msaf_in_process, write_mask_survey

X0, Y0 = 400000.0, 5000000.0  # write_mask_survey's top-left corner (EPSG:32633, 1 mm pixels)
CELL_M2 = 0.25  # 0.5 m cells
EDGE_CELL_M2 = 0.3 * 0.5  # the last column: surveyed from 2.5 to 2.8 m (nodata beyond)


def _line(x1: float, y1: float, x2: float, y2: float) -> shapely.LineString:
    """A line given in metres east and south of the deck's corner."""
    return shapely.LineString([(X0 + x1, Y0 - y1), (X0 + x2, Y0 - y2)])


def _pieces(*cracks: tuple[shapely.LineString, float]) -> gpd.GeoDataFrame:
    """The centreline layer's columns: each crack as one piece with its measured width (NaN: unmeasured)."""
    rows = [
        {"defect_id": i + 1, "segment": 1, "length_m": line.length, "width_mm": width, "geometry": line}
        for i, (line, width) in enumerate(cracks)
    ]
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:32633")


@pytest.fixture
def deck(tmp_path):
    """A 3 m x 2 m deck at 1 mm (6 x 4 cells of 0.5 m), not surveyed east of 2.8 m, and its cracks:
    each rule of the condition states in a cell of its own, far enough apart that one crack's
    spacing window (1.5 m) sees no other rule's crack unless said."""
    mask = np.zeros((2000, 3000), np.uint8)
    mask[:, 2800:] = 255
    folder = write_mask_survey(tmp_path / "deck", mask)
    pattern = [(_line(0.05, y, 1.45, y), 1.0) for y in (1.55, 1.65, 1.75, 1.85, 1.95)]  # 0.1 m apart
    cracks = _pieces(
        (_line(0.05, 0.25, 1.01, 0.25), 1.1),  # moderate width, alone: CS2 in (0,0), (0,1); its 1 cm tip in (0,2)
        (_line(2.65, 0.05, 2.65, 0.95), 2.0),  # wide: CS3 in (0,5), (1,5)
        (_line(1.75, 0.55, 1.75, 0.95), 0.5),  # under a 1 mm pixel: CS1 or CS2 in (1,3)
        (_line(2.25, 1.05, 2.25, 1.45), np.nan),  # no contrast in the image: CS1 to CS3 in (2,4)
        *pattern,  # moderate widths, heavy pattern cracking: CS3 where the window sees it dense enough
    )
    return folder / "mask.tif", cracks


def _states(result) -> dict[tuple[int, int], str]:
    """State per cell, slivers left out: UTM's scale makes a 0.5 m ground cell 0.49986 m of the CRS, so
    a last row and column of cells hold a sliver of the deck (measured with it, never cracked here)."""
    return {(r.row, r.col): r.condition_state for r in result.cells.itertuples() if r.surveyed_m2 > 0.01}


def test_each_rule_gives_its_state_and_the_areas_add_up_to_the_surveyed_ground(deck):
    mask, cracks = deck
    result = assess_condition(mask, cracks, ConditionConfig(), SeverityConfig())
    states = _states(result)
    assert len(states) == 24  # every cell has surveyed ground
    flagged = {cell: state for cell, state in states.items() if state != "CS1"}
    # the pattern: 5 cracks 0.1 m apart in row 3, columns 0-2 (2.25, 2.5, 2.25 m of crack). Spacing =
    # ground / crack length over the 3 x 3 cells around a cell: (3,0) 1.0 m² / 4.75 m = 0.21 m and
    # (3,1) 1.5 / 7.0 = 0.21 m are heavy (< 1 ft: CS3); (3,2) sees 1.5 / 4.75 = 0.32 m: moderate (CS2)
    assert flagged == {
        (0, 0): "CS2",
        (0, 1): "CS2",
        (0, 5): "CS3",
        (1, 5): "CS3",
        (1, 3): "CS1-CS2",
        (2, 4): "CS1-CS3",
        (3, 0): "CS3",
        (3, 1): "CS3",
        (3, 2): "CS2",
    }
    cells = result.cells.set_index(["row", "col"])
    assert cells.loc[(0, 2), "crack_length_m"] == pytest.approx(0.01, abs=5e-4)  # the tip: measured, not rated
    assert cells.loc[(0, 0), "spacing_m"] == pytest.approx(1.0 / 0.95, rel=2e-3)  # alone: insignificant spacing
    assert cells.loc[(3, 1), "spacing_m"] == pytest.approx(1.5 / 7.0, rel=2e-3)
    assert cells.loc[(3, 0), "spacing_m"] == pytest.approx(1.0 / 4.75, rel=2e-3)
    assert cells.loc[(3, 2), "spacing_m"] == pytest.approx(1.5 / 4.75, rel=2e-3)
    assert cells.loc[(0, 5), "max_width_mm"] == 2.0 and np.isnan(cells.loc[(2, 4), "max_width_mm"])
    assert cells.loc[(1, 1), "surveyed_m2"] == pytest.approx(CELL_M2, rel=1e-3)  # UTM's scale: 0.03 %
    assert cells.loc[(1, 5), "surveyed_m2"] == pytest.approx(EDGE_CELL_M2, rel=5e-3)
    # the quantities: every surveyed square metre in exactly one state, CS1-CS3 always listed
    areas = result.area_by_state
    assert list(areas) == ["CS1", "CS1-CS2", "CS2", "CS1-CS3", "CS3"]  # MBEI's order, ranges where present
    assert sum(areas.values()) == pytest.approx(20 * CELL_M2 + 4 * EDGE_CELL_M2, rel=5e-3)
    assert areas["CS3"] == pytest.approx(2 * CELL_M2 + 2 * EDGE_CELL_M2, rel=5e-3)
    assert areas["CS2"] == pytest.approx(3 * CELL_M2, rel=1e-3) and areas["CS1-CS3"] == pytest.approx(CELL_M2, rel=1e-3)
    states_table = result.states.set_index("condition_state")
    assert states_table["share"].sum() == pytest.approx(1.0)
    assert states_table.loc["CS2", "area_sqft"] == pytest.approx(3 * CELL_M2 / 0.3048**2, rel=1e-3)
    assert result.cells.crs.to_epsg() == 32633 and result.cells.geometry.is_valid.all()
    union = shapely.union_all(result.cells.geometry.values)  # the cells tile the ground: no overlaps, no gaps
    assert union.area == pytest.approx(result.cells.geometry.area.sum())
    # each cell outlines its surveyed part (the footprint traced on a 3x decimated read: to 3 mm)
    assert union.bounds == pytest.approx((X0, Y0 - 2, X0 + 2.8, Y0), abs=3e-3)
    assert union.area == pytest.approx(result.cells["surveyed_m2"].sum(), rel=2e-3)


def test_a_finer_gsd_rates_what_a_coarser_one_cannot(tmp_path):
    """0.5 mm under 1 mm pixels is a range; the same crack under 0.25 mm pixels is moderate (CS2);
    0.2 mm under 0.25 mm pixels is insignificant (CS1); 1.6 mm under 2 mm pixels may be anything up to wide."""
    from rasterio.transform import from_origin

    from tests.conftest import write_raster

    def state(gsd_m: float, width_mm: float) -> str:
        folder = tmp_path / f"{gsd_m}-{width_mm}"
        folder.mkdir()
        side = round(1.0 / gsd_m)
        write_raster(
            folder / "mask.tif",
            np.zeros((1, side, side), np.uint8),
            transform=from_origin(X0, Y0, gsd_m, gsd_m),
            nodata=255,
        )
        result = assess_condition(
            folder / "mask.tif", _pieces((_line(0.1, 0.25, 0.4, 0.25), width_mm)), ConditionConfig(), SeverityConfig()
        )
        return _states(result)[(0, 0)]

    assert state(0.001, 0.5) == "CS1-CS2"
    assert state(0.00025, 0.5) == "CS2"
    assert state(0.00025, 0.2) == "CS1"
    assert state(0.002, 1.6) == "CS1-CS3"


def test_a_decimated_read_of_a_large_mask_keeps_the_quantities(deck, monkeypatch):
    """The surveyed area comes from a read of at most READ_PX a side (memory flat in raster size)."""
    mask, cracks = deck
    exact = assess_condition(mask, cracks, ConditionConfig(), SeverityConfig())
    monkeypatch.setattr(condition, "READ_PX", 256)  # 12x decimated: 250 x 167 samples
    coarse = assess_condition(mask, cracks, ConditionConfig(), SeverityConfig())
    assert _states(coarse) == _states(exact)
    for state, area in exact.area_by_state.items():
        assert coarse.area_by_state[state] == pytest.approx(area, rel=0.02, abs=1e-9)


def test_states_have_one_colour_each_and_spacing_limits_must_ascend():
    assert list(CONDITION_COLOURS) == list(STATE_MEANINGS)
    with pytest.raises(ValidationError, match="heavy <= insignificant"):
        ReportConfig.model_validate({"condition": {"crack_spacing_m": [0.9, 0.3]}})


def _write_elements(path, polygons: dict[str, shapely.Polygon], crs: str = "EPSG:4326", field: str = "element"):
    """Element polygons drawn in metres from the deck's corner, saved in ``crs`` (a GIS user's choice)."""
    frame = gpd.GeoDataFrame({field: list(polygons)}, geometry=list(polygons.values()), crs="EPSG:32633")
    frame.to_crs(crs).to_file(path, driver="GPKG")
    return path


def _box(x1: float, y1: float, x2: float, y2: float) -> shapely.Polygon:
    return shapely.box(X0 + x1, Y0 - y2, X0 + x2, Y0 - y1)


def test_condition_states_per_element_of_the_structure(deck, tmp_path):
    """Two spans drawn in WGS 84 split the deck at 1.5 m; a pier cap off the flight has no ground."""
    from pipeline.report.elements import quantities_by_element, read_elements

    mask, cracks = deck
    result = assess_condition(mask, cracks, ConditionConfig(), SeverityConfig())
    path = _write_elements(
        tmp_path / "elements.gpkg",
        {"span 1": _box(0, 0, 1.5, 2), "span 2": _box(1.5, 0, 3, 2), "pier cap": _box(5, 0, 6, 1)},
    )
    elements = read_elements(ElementsConfig(path=path), "EPSG:32633")
    assert elements.names == ["span 1", "span 2", "pier cap"]
    table = quantities_by_element(result.cells, elements)
    area = table.set_index(["element", "condition_state"])["area_m2"]
    # span 1: (0,0), (0,1) and (3,2) CS2, (3,0) and (3,1) CS3, the other 7 of its 12 cells CS1
    assert area["span 1", "CS2"] == pytest.approx(3 * CELL_M2, abs=2e-3)
    assert area["span 1", "CS3"] == pytest.approx(2 * CELL_M2, abs=2e-3)
    assert area["span 1", "CS1"] == pytest.approx(7 * CELL_M2, abs=2e-3)
    # span 2: (0,5) and (1,5) CS3 (edge cells), (1,3) CS1-CS2, (2,4) CS1-CS3, the rest CS1; to 2.8 m
    assert area["span 2", "CS3"] == pytest.approx(2 * EDGE_CELL_M2, abs=2e-3)
    assert area["span 2", "CS1-CS2"] == pytest.approx(CELL_M2, abs=2e-3)
    assert area["span 2", "CS1-CS3"] == pytest.approx(CELL_M2, abs=2e-3)
    surveyed = table.groupby("element", sort=False)["surveyed_m2"].first()
    assert surveyed["span 1"] == pytest.approx(3.0, abs=5e-3) and surveyed["span 2"] == pytest.approx(2.6, abs=5e-3)
    assert surveyed["pier cap"] == 0 and (table.loc[table["element"] == "pier cap", "area_m2"] == 0).all()
    assert surveyed.sum() == pytest.approx(result.states["area_m2"].sum(), rel=1e-3)  # the spans tile the deck


@pytest.mark.parametrize(
    ("features", "field", "message"),
    [
        ({"span 1": shapely.LineString([(X0, Y0), (X0 + 1, Y0)])}, "element", "must be polygons, found LineString"),
        ({"span 1": _box(0, 0, 1, 1)}, "name", "no field 'name' names the elements (fields: element)"),
        ({" ": _box(0, 0, 1, 1)}, "element", "1 polygon(s) have no 'element'"),
    ],
)
def test_elements_a_report_cannot_use_are_one_line(tmp_path, features, field, message):
    from pipeline.errors import MsafError
    from pipeline.report.elements import read_elements

    path = _write_elements(tmp_path / "elements.gpkg", features)
    with pytest.raises(MsafError, match=re.escape(message)):
        read_elements(ElementsConfig(path=path, field=field), "EPSG:32633")


def test_msaf_report_writes_the_quantities_of_each_element(tmp_path):
    """The command as an inspector types it; a mistyped field is one line and leaves no report."""
    import pyogrio

    from tests.conftest import assert_one_line_error, run_msaf

    mask = np.zeros((1000, 2000), np.uint8)
    mask[249:252, 50:450] = 1  # a 3 mm crack (CS3) in span 1
    survey = write_mask_survey(tmp_path / "survey", mask)
    path = _write_elements(
        tmp_path / "elements.gpkg", {"span 1": _box(0, 0, 1, 1), "span 2": _box(1, 0, 2, 1), "pier": _box(4, 0, 5, 1)}
    )
    wrong = msaf_in_process("report", str(survey), "--elements", str(path), "--element-field", "span")
    assert_one_line_error(wrong, "no field 'span' names the elements", "--element-field")
    assert not (survey / "defects.gpkg").exists() and not (survey / "report.html").exists()
    done = run_msaf("report", str(survey), "--elements", str(path))
    assert done.returncode == 0, done.stderr
    assert "condition states (cracking): CS1 1.75 m², CS2 0 m², CS3 0.25 m²" in done.stdout
    table = pyogrio.read_dataframe(survey / "defects.gpkg", layer="condition_by_element")
    area = table.set_index(["element", "condition_state"])["area_m2"]
    assert area["span 1", "CS3"] == pytest.approx(0.25, rel=2e-3) and area["span 2", "CS3"] == 0
    html = (survey / "report.html").read_text()
    assert "Condition states per element" in html and "no surveyed ground" in html and "pier" in html
    # the same elements named once in params.yaml (relative to it): every report has them, the
    # survey's own and the scheduled inbox's included
    from pipeline.config import load_params
    from pipeline.report.build import report_survey

    (tmp_path / "params.yaml").write_text("report:\n  elements: {path: elements.gpkg}\n")
    (survey / "defects.gpkg").unlink()
    report_survey(survey, load_params(tmp_path / "params.yaml").report)
    again = pyogrio.read_dataframe(survey / "defects.gpkg", layer="condition_by_element")
    pd.testing.assert_frame_equal(again, table)


def test_the_condition_bench_runs(tmp_path):
    """bench/condition_speed.py on a small mask: it cannot rot."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "speed.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "condition_speed.py"), "--sizes", "1024", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert (
        row["size"] == 1024 and row["pieces"] == int(1.5 * 1.024**2 / 0.02) and row["cells"] == 8
    )  # 3 x 3, the corner the disc misses
    assert row["condition_s"] > 0 and row["ratio"] == pytest.approx(row["condition_s"] / row["footprint_s"], rel=0.05)


def _deck_photo(path, mask_path, light: dict[tuple[int, int], float], seed: int = 0, blur=None):
    """A photo of the deck on the mask's grid: textured concrete (luminance ~150), each 0.5 m cell in
    ``light`` under that share of the light (a shadow: 0.08; glare: 3, clipped at white), each in
    ``blur`` defocused by that sigma (px), then sensor noise and JPEG (q85), as a drone orthomosaic
    stores it."""
    import rasterio
    from scipy.ndimage import gaussian_filter

    from tests.conftest import write_raster

    with rasterio.open(mask_path) as mask:
        height, width, transform = mask.height, mask.width, mask.transform
    rng = np.random.default_rng(seed)
    grey = 150 + gaussian_filter(rng.normal(0, 25, (height, width)), 1.5)
    pores = gaussian_filter((rng.random((height, width)) < 0.003).astype(np.float64), 1.5) > 0.02  # 3-6 px across
    grey -= 60 * gaussian_filter(pores.astype(np.float64), 0.7)  # air voids, through the camera's own blur
    gain = np.ones((height, width))
    for (row, col), share in light.items():
        gain[row * 500 : (row + 1) * 500, col * 500 : (col + 1) * 500] = share
    for (row, col), sigma in (blur or {}).items():
        cell = np.s_[max(0, row * 500 - 20) : (row + 1) * 500 + 20, max(0, col * 500 - 20) : (col + 1) * 500 + 20]
        grey[cell] = gaussian_filter(grey[cell], sigma)
    rgb = np.stack([grey * 1.02, grey, grey * 0.95]) * gain + rng.normal(0, 2, (3, height, width))
    data = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return write_raster(
        path, data, transform=transform, compress="jpeg", jpeg_quality=85, tiled=True, blockxsize=256, blockysize=256
    )


def test_ground_too_dark_or_clipped_to_show_a_crack_is_not_called_good(deck, tmp_path, monkeypatch):
    """A crack-free cell in deep shadow or under glare may hide anything up to a wide crack: CS1-CS3;
    a cracked one keeps what was found as its best state (CS2 -> CS2-CS3; CS3 stays CS3); lit cells
    are as without the photo; without a photo nothing is checked. A decimated read gives the same."""
    mask, cracks = deck
    light = {(1, 0): 0.08, (2, 1): 3.0, (0, 0): 0.08, (0, 5): 0.08, (2, 2): 0.3}
    photo = _deck_photo(tmp_path / "deck.tif", mask, light)
    plain = assess_condition(mask, cracks, ConditionConfig(), SeverityConfig())
    seen = assess_condition(mask, cracks, ConditionConfig(), SeverityConfig(), photo)
    before, after = _states(plain), _states(seen)
    assert {cell: state for cell, state in after.items() if state != before[cell]} == {
        (1, 0): "CS1-CS3",  # a tenth of the light: luminance ~12, under the 20 limit
        (2, 1): "CS1-CS3",  # glare: all but the darkest pores clipped
        (0, 0): "CS2-CS3",  # its moderate crack found, a wider one could hide in the shadow
    }
    assert before[(0, 5)] == after[(0, 5)] == "CS3"  # nothing is worse than what was found
    assert after[(2, 2)] == "CS1"  # a third of the light (luminance ~45) shows cracks: lifted, surveyed
    cells = seen.cells.set_index(["row", "col"])
    assert cells.loc[(1, 0), "exposure"] == "too dark" and cells.loc[(2, 1), "exposure"] == "overexposed"
    assert cells.loc[(1, 1), "exposure"] == "ok" and cells.loc[(1, 1), "luminance"] == pytest.approx(150, abs=5)
    assert cells.loc[(1, 0), "luminance"] == pytest.approx(12, abs=2)
    assert cells.loc[(2, 1), "clipped_share"] > 0.95 and cells.loc[(1, 1), "clipped_share"] < 0.01
    assert set(plain.cells["exposure"]) == {"not checked"} and plain.cells["luminance"].isna().all()
    assert sum(seen.area_by_state.values()) == pytest.approx(sum(plain.area_by_state.values()))
    monkeypatch.setattr(condition, "READ_PX", 256)  # 12x decimated: the verdicts hold
    assert _states(assess_condition(mask, cracks, ConditionConfig(), SeverityConfig(), photo)) == after


def test_ground_too_blurred_to_show_a_thin_crack_is_not_called_good(deck, tmp_path, monkeypatch):
    """Two defocused patches of 2 x 2 cells (sigma 5 px: the drone wall's cracks are gone by 3,
    bench/blur_robustness.py) may hide a crack: CS1-CS3 where none was found, CS2-CS3 under the
    moderate crack, the wide crack's CS3 stays CS3; a slightly soft cell (sigma 0.8) and the sharp
    ones are as they were. A stray reading is outvoted by its neighbours; with more cells than
    MAX_WINDOWS, one window stands for a block of cells, and blocks are judged as cells were."""
    from pipeline.report import sharpness

    mask, cracks = deck
    defocused = [(0, 0), (0, 1), (1, 0), (1, 1), (0, 4), (0, 5), (1, 4), (1, 5)]
    photo = _deck_photo(tmp_path / "deck.tif", mask, {}, blur={cell: 5.0 for cell in defocused} | {(2, 2): 0.8})
    before = _states(assess_condition(mask, cracks, ConditionConfig(), SeverityConfig()))
    seen = assess_condition(mask, cracks, ConditionConfig(), SeverityConfig(), photo)
    after = _states(seen)
    assert {cell: state for cell, state in after.items() if state != before[cell]} == {
        (0, 0): "CS2-CS3",  # its moderate crack found; a wider one could hide in the blur
        (0, 1): "CS2-CS3",
        (1, 0): "CS1-CS3",  # crack-free and defocused
        (1, 1): "CS1-CS3",
        (0, 4): "CS1-CS3",
        (1, 4): "CS1-CS3",
    }
    assert after[(0, 5)] == after[(1, 5)] == "CS3" and after[(2, 2)] == "CS1"
    cells = seen.cells.set_index(["row", "col"])
    assert set(cells.loc[defocused, "sharpness"]) == {"too blurred"} and (cells.loc[defocused, "blur_px"] > 2.5).all()
    assert cells.loc[(2, 2), "sharpness"] == "ok" and cells.loc[(2, 2), "blur_px"] < 1.5
    assert cells.loc[(2, 2), "blur_mm"] == pytest.approx(cells.loc[(2, 2), "blur_px"] * 1.0, rel=1e-3)  # 1 mm GSD
    sharp = cells.drop(index=[*defocused, (2, 2)])
    sharp = sharp[sharp["surveyed_m2"] > 0.01]  # no UTM slivers
    assert (sharp["sharpness"] == "ok").all() and (sharp["blur_px"] < 1.5).all()
    assert seen.unrated_m2 == {"too blurred": pytest.approx(6 * 0.25 + 2 * 0.15, rel=1e-3)}  # col 5 ends at 2.8 m
    assert seen.median_blur("px") < 1.5

    one_soft = _deck_photo(tmp_path / "soft.tif", mask, {}, blur={(3, 3): 5.0})  # a lone reading: outvoted
    lone = assess_condition(mask, cracks, ConditionConfig(), SeverityConfig(), one_soft).cells.set_index(["row", "col"])
    assert (lone["sharpness"] == "ok").all() and lone.loc[(3, 3), "blur_px"] < 1.5

    monkeypatch.setattr(sharpness, "MAX_WINDOWS", 9)  # 5 x 7 cells with the UTM slivers: a window per 2 x 2
    west = [(row, col) for row in range(4) for col in range(4)]  # 2 x 2 blocks defocused
    half = _deck_photo(tmp_path / "half.tif", mask, {}, blur={cell: 5.0 for cell in west})
    coarse = assess_condition(mask, cracks, ConditionConfig(), SeverityConfig(), half).cells.set_index(["row", "col"])
    assert coarse.loc[(0, 0), "blur_px"] == coarse.loc[(1, 1), "blur_px"]  # one reading per block
    assert set(coarse.loc[west, "sharpness"]) == {"too blurred"}
    assert (coarse.drop(index=west)["sharpness"] == "ok").all()


def test_msaf_report_names_the_ground_it_could_not_rate_for_its_exposure_or_blur(tmp_path):
    """Through the command, with the orthomosaic: the cells of a shadowed span and of a defocused one
    are CS1-CS3 in defects.gpkg, the command and the page say the areas and the image's blur (MLflow
    logs it); without the image they say exposure and sharpness were not checked."""
    import pyogrio

    from tests.conftest import run_msaf

    mask = np.zeros((1000, 2000), np.uint8)
    survey = write_mask_survey(tmp_path / "survey", mask)
    defocused = [(0, 2), (0, 3), (1, 2), (1, 3)]  # the eastern metre
    photo = _deck_photo(
        tmp_path / "deck.tif", survey / "mask.tif", {(0, 0): 0.05, (1, 0): 0.05}, blur={cell: 5.0 for cell in defocused}
    )
    done = run_msaf("report", str(survey), "--image", str(photo))
    assert done.returncode == 0, done.stderr
    assert "condition states (cracking): CS1 0.5 m², CS2 0 m², CS1-CS3 1.5 m², CS3 0 m²" in done.stdout
    assert "cannot show a crack: 0.5 m² too dark and 1 m² too blurred (rated up to CS3" in done.stdout
    blur_line = next(line for line in done.stdout.splitlines() if line.startswith("image blur: "))
    assert float(blur_line.split()[2]) < 1.0 and "mm) median over the surveyed ground" in blur_line
    cells = pyogrio.read_dataframe(survey / "defects.gpkg", layer="condition_cells")
    assert sorted(cells.loc[cells["exposure"] == "too dark", "col"]) == [0, 0]
    blurred = cells[(cells["sharpness"] == "too blurred") & (cells["surveyed_m2"] > 0.01)]  # no UTM slivers
    assert sorted(map(tuple, blurred[["row", "col"]].values.tolist())) == defocused
    assert cells["blur_px"].notna().sum() >= 6  # the dark cells may be too plain to read; the rest are read
    page = (survey / "report.html").read_text()
    assert "0.5 m² too dark (mean luminance &lt; 20 of 255) and 1 m² too blurred (blur over 2 px)" in page
    assert "Image sharpness: the orthomosaic&#39;s blur over the surveyed ground is" in page
    for name in ("defects.gpkg", "defects.geojson", "defects.csv", "defects.parquet", "report.html"):
        (survey / name).unlink(missing_ok=True)
    plain = run_msaf("report", str(survey))
    assert plain.returncode == 0, plain.stderr
    assert "Exposure and sharpness not checked (no orthomosaic)" in (survey / "report.html").read_text()
    assert "cannot show a crack" not in plain.stdout and "image blur" not in plain.stdout
