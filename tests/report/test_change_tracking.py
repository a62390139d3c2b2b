"""Change tracking that holds: synthetic epoch pairs with one of each change, shifts and reprojections."""

import json
import os
import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject

from pipeline.config import ElementsConfig, ReportConfig
from pipeline.report.compare import ChangeReport, compare_surveys
from tests.conftest import write_mask_survey

CLASSES = ["background", "crack", "spall"]
CFG = ReportConfig(min_area_m2=0, match_distance_m=0.01)


def _old_epoch() -> np.ndarray:
    old = np.zeros((420, 520), np.uint8)
    old[50:53, 20:220] = 1  # A: will be extended by 0.1 m
    old[150:153, 20:220] = 1  # B: will widen from 3 to 7 mm
    old[200:203, 20:220] = 1  # C: unchanged
    for start in (20, 70, 120, 170):
        old[300:303, start : start + 40] = 1  # R: one crack the model saw in four pieces; repaired
    old[350:390, 300:340] = 2  # S: a spall, unchanged
    return old


def _statuses(result: ChangeReport) -> dict:
    return {status: count for status, count in result.changes.items() if count}


def test_one_of_each_crack_change(tmp_path):
    old = _old_epoch()
    new = old.copy()
    new[50:53, 220:320] = 1  # A + 0.1 m
    new[148:155, 20:220] = 1  # B 7 mm wide
    new[300:303, :] = 0  # R repaired
    new[90:93, 100:450] = 1  # N: a new 0.35 m crack 40 mm from A, its end 8 mm from A's extension
    new[53:90, 420:423] = 0
    write_mask_survey(tmp_path / "old", old)
    write_mask_survey(tmp_path / "new", new, crs="EPSG:25833", shift_px=2)  # other CRS, 2 mm registration offset
    result = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "changes", CFG)
    assert _statuses(result) == {"new": 1, "extended": 1, "widened": 1, "unchanged": 2, "not found (repaired?)": 1}
    changes = gpd.read_file(tmp_path / "changes" / "changes.gpkg", layer="changes").set_index("status")
    assert changes.loc["extended", "delta_length_m"] == pytest.approx(0.100, abs=0.01)
    assert changes.loc["new", "new_length_m"] == pytest.approx(0.35, rel=0.03)
    assert changes.loc["new", "old_ids"] in ("", None)  # not merged with A, B or C
    assert changes.loc["widened", "delta_max_width_mm"] == pytest.approx(4.0, abs=1.0)
    assert changes.loc["not found (repaired?)", "old_ids"].count(",") == 3  # four pieces, one item
    assert changes.loc["not found (repaired?)", "delta_length_m"] == pytest.approx(-0.16, rel=0.1)


@pytest.mark.parametrize("crs", ["EPSG:3035", "EPSG:3857"])
def test_an_epoch_against_its_own_reprojection_is_unchanged(tmp_path, crs):
    old = write_mask_survey(tmp_path / "old", _old_epoch())
    again = tmp_path / "again"
    again.mkdir()
    with rasterio.open(old / "mask.tif") as src:
        transform, width, height = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds)
        out = np.full((height, width), 255, np.uint8)
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=transform,
            dst_crs=crs,
            resampling=Resampling.nearest,
            src_nodata=255,
            dst_nodata=255,
        )
        profile = src.profile | {"crs": crs, "transform": transform, "width": width, "height": height}
    with rasterio.open(again / "mask.tif", "w", **profile) as dst:
        dst.write(out, 1)
        dst.update_tags(MSAF_CLASSES=json.dumps(CLASSES))
    result = compare_surveys(old, again, tmp_path / "changes", CFG)
    assert _statuses(result) == {"unchanged": 8}  # A, B, C, the four pieces of R (a row per new crack), S


def test_web_mercator_epochs_are_compared_in_ground_metres(tmp_path):
    """In EPSG:3857 a 10 mm tolerance would be 14 mm of map units at 45° N: the comparison moves to UTM."""
    from pipeline.report.change_matching import working_crs_of
    from pipeline.report.survey_layers import load_defects

    old = write_mask_survey(tmp_path / "old", _old_epoch())
    mercator = tmp_path / "mercator"
    mercator.mkdir()
    with rasterio.open(old / "mask.tif") as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height, *src.bounds)
        out = np.full((height, width), 255, np.uint8)
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=transform,
            dst_crs="EPSG:3857",
            resampling=Resampling.nearest,
            src_nodata=255,
            dst_nodata=255,
        )
        profile = src.profile | {"crs": "EPSG:3857", "transform": transform, "width": width, "height": height}
    with rasterio.open(mercator / "mask.tif", "w", **profile) as dst:
        dst.write(out, 1)
        dst.update_tags(MSAF_CLASSES=json.dumps(CLASSES))
    assert working_crs_of(load_defects(mercator, CFG)).to_epsg() == 32633
    assert working_crs_of(load_defects(old, CFG)).to_epsg() == 32633


def test_two_defect_free_surveys_compare_to_nothing(tmp_path):
    empty = np.zeros((64, 64), np.uint8)
    result = compare_surveys(
        write_mask_survey(tmp_path / "a", empty), write_mask_survey(tmp_path / "b", empty), tmp_path / "out", CFG
    )
    assert _statuses(result) == {}
    assert (tmp_path / "out" / "report.html").is_file()
    assert len(gpd.read_file(tmp_path / "out" / "changes.gpkg", layer="changes")) == 0


def test_a_survey_against_itself_is_unchanged_for_cracks_of_any_length(tmp_path):
    """Cracks shorter than twice the registration tolerance (40 mm at the default 0.02 m) used to
    come out both "new" and "not found (repaired?)" against the very same survey."""
    mask = np.zeros((200, 300), np.uint8)
    for i, length in enumerate((8, 15, 30, 39, 60, 200)):  # mm at 1 mm/px
        mask[20 + 30 * i : 23 + 30 * i, 40 : 40 + length] = 1
    survey = write_mask_survey(tmp_path / "survey", mask)
    result = compare_surveys(survey, survey, tmp_path / "changes", ReportConfig(min_area_m2=0))
    assert _statuses(result) == {"unchanged": 6}


def test_only_the_ground_both_surveys_imaged_is_compared(tmp_path):
    """A new flight over the western half only: the eastern half's cracks are not covered, never
    repaired; a survey that images nothing, or other ground, is one line."""
    from pipeline.errors import MsafError

    old = _old_epoch()
    old[100:103, 300:500] = 1  # E: a crack in the eastern half
    new = old.copy()
    new[:, 260:] = 255  # nodata: not flown
    new[250:253, 20:200] = 1  # W: a new crack in the flown half
    new[200:203, 20:220] = 0  # C: repaired, in the flown half
    write_mask_survey(tmp_path / "old", old)
    write_mask_survey(tmp_path / "half", new)
    result = compare_surveys(tmp_path / "old", tmp_path / "half", tmp_path / "changes", CFG)
    # A, B and R's four pieces unchanged; W new; C repaired; E and the spall S were not flown again
    assert _statuses(result) == {"new": 1, "unchanged": 6, "not found (repaired?)": 1, "not covered": 2}
    changes = gpd.read_file(tmp_path / "changes" / "changes.gpkg", layer="changes")
    unseen = changes[changes["status"] == "not covered"]
    assert sorted(unseen["class"]) == ["crack", "spall"] and (unseen.geometry.centroid.x > 400000.26).all()
    write_mask_survey(tmp_path / "empty", np.full_like(old, 255))
    with pytest.raises(MsafError, match="image no common ground"):
        compare_surveys(tmp_path / "old", tmp_path / "empty", tmp_path / "c2", CFG)
    far = write_mask_survey(tmp_path / "far", old, crs="EPSG:32617")  # same numbers, another UTM zone
    with pytest.raises(MsafError, match="image no common ground"):
        compare_surveys(tmp_path / "old", far, tmp_path / "c3", CFG)


def test_cracks_without_centrelines_are_rated_in_the_same_words_as_with_them():
    """A report from before centrelines were written has only outlines: its cracks are matched as
    areas, and a longer crack is still "extended" and a wider one "widened", never "grown"."""
    from shapely.geometry import box

    from pipeline.report.change_matching import STATUSES, match_defects
    from pipeline.report.change_status import ChangeStatus

    def frame(rows):
        return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:32633")

    def crack(i, x, length, width):
        return {
            "defect_id": i,
            "class": "crack",
            "area_m2": length * width / 1000,
            "length_m": length,
            "max_width_mm": width,
            "geometry": box(500000 + x, 5000000, 500000 + x + length, 5000000 + width / 1000),
        }

    spall = {"defect_id": 9, "class": "spall", "area_m2": 0.01, "length_m": np.nan, "max_width_mm": np.nan}
    old = frame(
        [
            crack(1, 0, 0.2, 1),
            crack(2, 1, 0.2, 1),
            crack(3, 2, 0.2, 1),
            spall | {"geometry": box(500003, 5000000, 500003.1, 5000000.1)},
        ]
    )
    new = frame(
        [
            crack(1, 0, 0.3, 1),
            crack(2, 1, 0.2, 2),
            crack(3, 2, 0.2, 1),
            spall | {"area_m2": 0.02, "geometry": box(500003, 5000000, 500003.1, 5000000.2)},
        ]
    )
    changes = match_defects(old, new, ReportConfig(min_area_m2=0, match_distance_m=0.01)).changes
    assert sorted(zip(changes["class"], changes["status"], strict=True)) == [
        ("crack", "extended"),
        ("crack", "unchanged"),
        ("crack", "widened"),
        ("spall", "grown"),
    ]
    assert tuple(ChangeStatus) == STATUSES and set(changes["status"]) <= set(STATUSES)


def test_surveys_made_differently_are_compared_with_a_warning_that_says_how(tmp_path, surveyed):
    """Another model, other views, thresholds, shadow lift or fill taken as nodata move thin edges: the
    change report says so (views 1 against 1,2 moved 0.1-5 % of a mask's pixels), and says nothing for
    two epochs made alike."""
    import shutil

    from pipeline.survey_record import method_differences, read_survey_record

    old, alike, other = (tmp_path / name for name in ("old", "alike", "other"))
    for folder in (old, alike, other):
        shutil.copytree(surveyed, folder)
    record = json.loads((other / "survey.json").read_text())
    before = ", ".join(f"{n} {t:g}" for n, t in sorted(record["thresholds"].items())) or "argmax"
    floor = record["exposure_floor"]
    record |= {"scales": [1.0, 2.0], "thresholds": {"crack": 0.4}, "exposure_floor": floor + 170}
    record["collar"] = {"near": 8, "size": 32, "smear": 48, "white": False}  # survey.collar: on
    (other / "survey.json").write_text(json.dumps(record))

    same = compare_surveys(old, alike, tmp_path / "same", ReportConfig(min_area_m2=0))
    assert same.method_differences == []
    assert "not made the same way" not in (tmp_path / "same" / "report.html").read_text()
    changed = compare_surveys(old, other, tmp_path / "changed", ReportConfig(min_area_m2=0))
    assert changed.method_differences == [
        "views: 1 -> 1,2",
        f"thresholds: {before} -> crack 0.4",
        f"exposure floor: {floor:g} -> {floor + 170:g}",
        "painted-in fill taken as nodata: no -> black, within 8 levels in 32-px squares, beside it 48",
    ]
    page = (tmp_path / "changed" / "report.html").read_text()
    assert "not made the same way (views: 1 -&gt; 1,2; thresholds:" in page

    older = read_survey_record(old)
    older = older.model_copy(  # from before the thresholds, the floor and the footprint were recorded
        update={"thresholds": None, "exposure_floor": None, "input": older.input.model_copy(update={"footprint": None})}
    )
    assert method_differences(older, read_survey_record(other)) == ["views: 1 -> 1,2"]
    assert method_differences(None, read_survey_record(other)) == []


def test_condition_states_are_compared_on_the_ground_both_surveys_imaged(tmp_path):
    """A 2 m x 1 m deck in 0.5 m cells: a wide crack in one cell both years, a new one in another,
    and an old one east of 1.5 m where the second flight did not go (left out of both quantities)."""
    import pyogrio

    from pipeline.report.outputs import write_geopackage

    old = np.zeros((1000, 2000), np.uint8)
    old[249:252, 50:450] = 1  # A: 3 mm wide (CS3) in cell (0, 0), both years
    old[749:752, 1600:1900] = 1  # E: in cell (1, 3), not flown again
    new = old.copy()
    new[749:752, 550:950] = 1  # N: new, 3 mm wide, in cell (1, 1)
    new[:, 1500:] = 255
    write_mask_survey(tmp_path / "old", old)
    write_mask_survey(tmp_path / "new", new)
    result = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "changes", CFG)
    table = pyogrio.read_dataframe(tmp_path / "changes" / "changes.gpkg", layer="condition_change")
    table = table.set_index("condition_state")
    assert list(table.index) == ["CS1", "CS2", "CS3"]
    assert table.loc["CS3", "old_m2"] == pytest.approx(0.25, rel=2e-3)  # A only: E is outside the common ground
    assert table.loc["CS3", "new_m2"] == pytest.approx(0.50, rel=2e-3)
    # the same ground both years (a cell partly surveyed counts pro rata: within 0.1 %)
    assert table["old_m2"].sum() == pytest.approx(1.5, rel=2e-3) and table["new_m2"].sum() == pytest.approx(
        1.5, rel=2e-3
    )
    assert result.condition_change_m2 == pytest.approx({"CS1": -0.25, "CS2": 0.0, "CS3": 0.25}, abs=1e-3)
    assert (
        "Condition states (cracking) on the ground both surveys imaged"
        in (tmp_path / "changes" / "report.html").read_text()
    )
    # a survey reported before condition states existed: compared as before, and told how to add them
    gpkg = tmp_path / "old" / "defects.gpkg"
    kept = {name: gpd.read_file(gpkg, layer=name) for name in ("defects", "crack_centerlines")}
    gpkg.unlink()
    write_geopackage(gpkg, kept)
    again = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "again", CFG)
    assert again.changes == result.changes and again.condition_change_m2 == {}
    html = (tmp_path / "again" / "report.html").read_text()
    assert "Condition states not compared" in html and "re-run `msaf report`" in html


def test_condition_states_per_element_are_compared_when_the_params_name_the_elements(tmp_path):
    """report.elements: the change per span, on the ground both epochs imaged."""
    import pyogrio
    import shapely

    old = np.zeros((1000, 2000), np.uint8)
    old[249:252, 50:450] = 1  # in span 1 both years
    new = old.copy()
    new[749:752, 1550:1950] = 1  # new in span 2
    write_mask_survey(tmp_path / "old", old)
    write_mask_survey(tmp_path / "new", new)
    spans = gpd.GeoDataFrame(
        {"element": ["span 1", "span 2"]},
        geometry=[shapely.box(400000, 4999999, 400001, 5000000), shapely.box(400001, 4999999, 400002, 5000000)],
        crs="EPSG:32633",
    )
    spans.to_file(tmp_path / "spans.gpkg")
    cfg = CFG.model_copy(update={"elements": ElementsConfig(path=tmp_path / "spans.gpkg")})
    compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "changes", cfg)
    table = pyogrio.read_dataframe(tmp_path / "changes" / "changes.gpkg", layer="condition_change_by_element")
    change = table.set_index(["element", "condition_state"])["change_m2"]
    assert change["span 1", "CS3"] == pytest.approx(0, abs=1e-9) and change["span 2", "CS3"] == pytest.approx(
        0.25, rel=2e-3
    )
    assert change["span 2", "CS1"] == pytest.approx(-0.25, rel=2e-3)
    assert "Condition states per element" in (tmp_path / "changes" / "report.html").read_text()


def test_a_flight_that_reads_every_crack_wider_widens_only_the_crack_that_widened(tmp_path):
    """Two flights measure the same cracks' widths differently (a blurrier one reads every crack
    wider): six cracks read 1 mm wider in the second survey and one of them 5 mm wider. Only that one
    is widened; the flights' difference is measured (+1 mm over the matched pieces) and reported."""
    old = np.zeros((420, 520), np.uint8)
    new = old.copy()
    for k, top in enumerate(range(40, 400, 60)):
        old[top : top + 3, 40:460] = 1
        new[top : top + (8 if k == 2 else 4), 40:460] = 1  # 4 mm: the flight; 8 mm: the crack too
    write_mask_survey(tmp_path / "old", old)
    write_mask_survey(tmp_path / "new", new)
    result = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "changes", CFG)
    assert _statuses(result) == {"widened": 1, "unchanged": 5}
    assert result.widths.bias_mm == pytest.approx(1.0, abs=0.05) and result.widths.pairs >= 20
    changes = gpd.read_file(tmp_path / "changes" / "changes.gpkg", layer="changes").set_index("status")
    assert changes.loc["widened", "widening_mm"] == pytest.approx(4.0, abs=0.5)
    assert changes.loc["widened", "delta_max_width_mm"] == pytest.approx(5.0, abs=0.5)  # as measured
    table = gpd.read_file(tmp_path / "changes" / "changes.gpkg", layer="width_comparison")
    assert table.loc[0, "bias_mm"] == pytest.approx(1.0, abs=0.05)
    assert table.loc[0, "band"] == "each survey's own"  # no orthomosaics: the reports' own widths
    html = (tmp_path / "changes" / "report.html").read_text()
    assert "The new flight reads the same cracks 1.00 mm wider" in html
    # noiseless widths: what an unchanged crack could have widened unseen is change_tolerance of 3 mm
    assert changes["detectable_widening_mm"].to_numpy() == pytest.approx([0.3] * 6, abs=0.002)
    cracks = gpd.read_file(tmp_path / "changes" / "changes.gpkg", layer="crack_changes")
    assert cracks["detectable_widening_mm"].to_numpy() == pytest.approx([0.3] * 6, abs=0.002)
    assert "may still have widened by up to its detectable_widening_mm: 0.30 mm at the median over the 6" in html


def _photographed(widths_px: list[float], gain: float, offset: float, blur: float, seed: int) -> np.ndarray:
    """Six horizontal cracks of these widths on a textured grey (sub-pixel: each row darkened by the
    share of it the crack covers), the first and fifth with a dark joint line 6 px above them, blurred,
    lit, noisy and JPEG'd as a drone camera stores it (RGB)."""
    import io

    from PIL import Image
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    texture = gaussian_filter(np.random.default_rng(0).normal(0, 40, (420, 520)), 3)  # the same ground
    grey = 175 + texture
    rows = np.arange(420)[:, None]
    for top, width in zip(range(40, 400, 60), widths_px, strict=True):
        centre = top + 2.0
        covered = np.clip(np.minimum(rows + 1, centre + width / 2) - np.maximum(rows, centre - width / 2), 0, 1)
        grey[:, 40:460] -= 110 * covered
        if top in (40, 280):
            grey[top - 6, 20:500] -= 90  # a joint beside the crack: the same ground in every flight
    seen = gaussian_filter(grey, blur) * gain + offset + rng.normal(0, 2, grey.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(np.clip(seen, 0, 255).astype(np.uint8)[..., None], 3, axis=2)).save(
        buffer, "JPEG", quality=85
    )
    return np.asarray(Image.open(buffer)).transpose(2, 0, 1)


def test_with_width_band_same_both_orthomosaics_read_the_old_cracks_over_the_same_band(tmp_path):
    """Two flights whose masks differ (the second's 3 px wider on every crack, towards the joints
    beside two of them, as another light and blur make a model's mask) and whose light and blur
    differ: with ``report.width_band: same`` (the default) the old cracks are read in both
    orthomosaics over the same band, and only the crack that widened by 1 mm is widened. Each
    report's widths over its own mask's band (``own``) read a joint into the new flight's widths
    only: a crack beside one comes out widened too."""
    from rasterio.transform import from_origin

    from pipeline.report.build import report_survey
    from tests.conftest import write_raster

    old_mask, new_mask = np.zeros((420, 520), np.uint8), np.zeros((420, 520), np.uint8)
    for top in range(40, 400, 60):
        old_mask[top : top + 4, 40:460] = 1
        new_mask[top - 3 : top + 4, 40:460] = 1
    write_mask_survey(tmp_path / "old", old_mask)
    write_mask_survey(tmp_path / "new", new_mask)
    grid = {"transform": from_origin(400000, 5000000, 0.001, 0.001)}
    old_image = write_raster(tmp_path / "old.tif", _photographed([2.0] * 6, 1.0, 0, 0.5, 1), **grid)
    widened = [2.0, 2.0, 3.0, 2.0, 2.0, 2.0]
    new_image = write_raster(tmp_path / "new.tif", _photographed(widened, 0.85, 15, 0.8, 2), **grid)
    for folder, image in (("old", old_image), ("new", new_image)):  # each report reads its widths from its image
        report_survey(tmp_path / folder, CFG, image=image)
    each_own = CFG.model_copy(update={"width_band": "own"})
    own = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "own", each_own, old_image, new_image)
    assert own.widths.band == "each survey's own" and _statuses(own) != {"widened": 1, "unchanged": 5}
    assert CFG.width_band == "same"  # the default
    result = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "changes", CFG, old_image, new_image)
    assert result.widths.band == "same band" and result.widths.pairs >= 20
    assert 1.1 < result.widths.scale < 1.5  # the second flight's contrast reads every crack wider
    assert _statuses(result) == {"widened": 1, "unchanged": 5}
    changes = gpd.read_file(tmp_path / "changes" / "changes.gpkg", layer="changes").set_index("status")
    # the widened crack's own core darkens too, so its contrast moves with it: 1 mm reads ~0.6 mm
    assert 0.4 < changes.loc["widened", "widening_mm"] < 1.3
    assert (changes.loc["unchanged", "detectable_widening_mm"] < 0.6).all()  # what 1 mm had to clear
    assert "read in both orthomosaics over the same band" in (tmp_path / "changes" / "report.html").read_text()


def test_growth_per_year_comes_from_the_two_flight_dates(tmp_path, surveyed):
    """A crack 0.2 m longer after 365 days grows by its added length per 365/365.25 of a year; without a
    flight date on both surveys there is no rate (when a survey ran says nothing about the flight)."""
    import pandas as pd

    from pipeline.report.epochs import flight_interval
    from pipeline.survey_record import read_survey_record

    template = json.loads((surveyed / "survey.json").read_text())
    template["input"]["path"] = str(tmp_path / "flown-and-deleted.tif")  # widths from the masks
    old, new = np.zeros((300, 900), np.uint8), np.zeros((300, 900), np.uint8)
    old[148:151, 50:450] = 1
    new[148:151, 50:650] = 1
    for name, mask, date in (("old", old, "2025-06-01"), ("new", new, "2026-06-01"), ("undated", new, "")):
        folder = write_mask_survey(tmp_path / name, mask)
        (folder / "survey.json").write_text(json.dumps(template | {"job": {"flight_date": date} if date else {}}))
    interval = flight_interval(read_survey_record(tmp_path / "old"), read_survey_record(tmp_path / "new"))
    assert interval is not None and interval.days == 365 and interval.describe() == "365 days (2025-06-01 → 2026-06-01)"
    result = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "changes", CFG)
    assert _statuses(result) == {"extended": 1}
    changes = gpd.read_file(tmp_path / "changes" / "changes.gpkg", layer="changes")
    assert changes.loc[0, "crack_type"] == "linear"  # east-west, and no axis given
    assert changes.loc[0, "delta_length_m"] == pytest.approx(0.19, abs=0.01)  # beyond the 10 mm match distance
    assert changes.loc[0, "delta_length_m_per_year"] == pytest.approx(changes.loc[0, "delta_length_m"] * 365.25 / 365)
    page = (tmp_path / "changes" / "report.html").read_text()
    assert "365 days (2025-06-01 → 2026-06-01)" in page
    assert "Fastest-growing cracks (365 days (2025-06-01 → 2026-06-01))" in page
    undated = compare_surveys(tmp_path / "old", tmp_path / "undated", tmp_path / "undated-changes", CFG)
    assert _statuses(undated) == {"extended": 1}
    rates = pd.read_csv(tmp_path / "undated-changes" / "changes.csv")[
        ["delta_length_m_per_year", "widening_mm_per_year"]
    ]
    assert rates.isna().all().all()
    undated_page = (tmp_path / "undated-changes" / "report.html").read_text()
    assert "unknown (give both surveys a flight_date)" in undated_page and "Fastest-growing" not in undated_page


def test_the_fastest_growing_cracks_come_first_and_only_growing_ones_are_listed():
    import pandas as pd

    from pipeline.report.change_page import fastest_growing

    changes = pd.DataFrame(
        {
            "change_id": [1, 2, 3, 4, 5],
            "status": ["unchanged", "extended", "widened", "extended", "shrunk"],
            "crack_type": ["linear", "transverse", "diagonal", "map", "linear"],
            "delta_length_m_per_year": [0.0, 0.05, 0.0, 0.30, -0.1],
            "widening_mm_per_year": [0.0, 0.1, 0.4, float("nan"), 0.0],
            "new_ids": ["1", "2", "3", "4", "5"],
        }
    )
    assert fastest_growing(changes)["change_id"].tolist() == [4, 2, 3]
    assert fastest_growing(changes, count=1)["crack_type"].tolist() == ["map"]


def test_a_crack_that_grew_past_a_break_in_its_mask_is_one_extended_crack(tmp_path):
    """The new survey's mask breaks a grown crack 8 mm past its old tip: piece by piece it reads as an
    unchanged crack and a new one; the report links the pieces into one crack (crack_id), and per
    crack it is extended by the new piece's length. A crack that truly appeared stays new, a crack
    of one unchanged piece stays unchanged, and the lost crack is not a crack of the new survey."""
    old = _old_epoch()
    new = old.copy()
    new[50:53, 228:348] = 1  # A grew 0.128 m, its mask broken 8 mm past the old tip
    new[300:303, :] = 0  # R repaired
    new[100:103, 300:450] = 1  # N: a new crack, far from any other
    write_mask_survey(tmp_path / "old", old)
    write_mask_survey(tmp_path / "new", new)
    result = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "changes", CFG)
    assert _statuses(result) == {"new": 2, "unchanged": 4, "not found (repaired?)": 1}  # piece by piece (S: a spall)
    assert result.cracks == {"extended": 1, "new": 1, "unchanged": 2}  # per crack of the new survey
    cracks = gpd.read_file(tmp_path / "changes" / "changes.gpkg", layer="crack_changes")
    grown = cracks[cracks["pieces"] == 2].iloc[0]
    assert grown["status"] == "extended" and grown["piece_statuses"] == "new,unchanged"
    assert grown["delta_length_m"] == pytest.approx(0.12, abs=0.01)
    assert grown["new_length_m"] == pytest.approx(0.32, abs=0.015)
    assert grown["old_ids"] != "" and grown["new_ids"].count(",") == 1
    appeared = cracks[(cracks["status"] == "new")].iloc[0]
    assert appeared["pieces"] == 1 and appeared["new_length_m"] == pytest.approx(0.15, rel=0.05)
    assert len(cracks) == 4 and cracks["crack_id"].is_unique
    page = (tmp_path / "changes" / "report.html").read_text()
    assert "Changes per crack: 1 cracks of several pieces of mask" in page
    with sqlite3.connect(tmp_path / "changes" / "changes.gpkg") as con:  # QGIS opens it coloured by status
        styled = dict(con.execute("SELECT f_table_name, styleQML FROM layer_styles WHERE useAsDefault").fetchall())
    assert 'attr="status"' in styled["crack_changes"] and 'attr="status"' in styled["changes"]


def test_msaf_history_follows_each_crack_through_three_surveys(tmp_path, surveyed):
    """Three yearly flights given out of order: a crack that lengthens then widens is growing, one
    that appears in the second flight is stable since, one repaired before the third is lost; one
    the second flight read wide (noise: the same in the first and third) and one the second flight
    missed are stable, as the first and latest flights agree; each crack's length and width survey by
    survey, and its growth per year over the two years."""
    from pipeline.styles import HISTORY_COLOURS
    from tests.conftest import run_msaf

    template = json.loads((surveyed / "survey.json").read_text())
    template["input"]["path"] = str(tmp_path / "flown-and-deleted.tif")  # widths from the masks
    masks = [np.zeros((300, 900), np.uint8) for _ in range(3)]
    masks[0][48:51, 50:450] = 1  # A: 0.4 m, 3 mm
    masks[1][48:51, 50:650] = 1  # A: 0.6 m
    masks[2][47:52, 50:650] = 1  # A: 0.6 m, 5 mm
    masks[0][200:203, 600:800] = masks[1][200:203, 600:800] = 1  # C: repaired before the third flight
    masks[1][120:123, 100:300] = masks[2][120:123, 100:300] = 1  # B: new in the second flight
    for mask in masks:
        mask[260:263, 100:500] = 1  # D: the same in every flight
    masks[0][160:163, 50:350] = masks[2][160:163, 50:350] = masks[1][159:164, 50:350] = 1  # E: read wide once
    masks[0][230:233, 600:850] = masks[2][230:233, 600:850] = 1  # F: missed by the second flight
    folders = []
    for mask, date in zip(masks, ("2024-06-01", "2025-06-01", "2026-06-01"), strict=True):
        folder = write_mask_survey(tmp_path / f"flight-{date[:4]}", mask)
        (folder / "survey.json").write_text(json.dumps(template | {"job": {"flight_date": date}}))
        folders.append(str(folder))
    params = tmp_path / "params.yaml"
    params.write_text("report:\n  min_area_m2: 0\n  match_distance_m: 0.01\n")
    out = tmp_path / "history"
    done = run_msaf("history", folders[2], folders[0], folders[1], "--out", str(out), "--params", str(params))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "6 cracks over 3 surveys: 1 growing, 3 stable, 1 new, 1 not found (repaired?), 0 not seen in every survey"
        in done.stdout
    )
    history = gpd.read_file(out / "history.gpkg", layer="crack_history").set_index("trend")
    grown = history.loc["growing"]
    assert (grown["first_seen"], grown["last_seen"], grown["seen_in"]) == ("2024-06-01", "2026-06-01", 3)
    assert (grown["first_length_m"], grown["length_m"]) == pytest.approx((0.4, 0.6), abs=0.01)
    assert (grown["first_max_width_mm"], grown["max_width_mm"]) == pytest.approx((3, 5), abs=0.5)
    years = 730 / 365.25
    assert grown["lengthening_m_per_year"] == pytest.approx((grown["length_m"] - grown["first_length_m"]) / years)
    assert grown["widening_mm_per_year"] == pytest.approx((grown["max_width_mm"] - grown["first_max_width_mm"]) / years)
    assert history.loc["new", "first_seen"] == "2025-06-01" and history.loc["new", "seen_in"] == 2
    lost = history.loc["not found (repaired?)"]
    assert lost["last_seen"] == "2025-06-01" and not lost["latest_crack_ids"]
    assert grown.geometry.bounds == pytest.approx((400000.05, 4999999.948, 400000.65, 4999999.953), abs=0.002)
    with sqlite3.connect(out / "history.gpkg") as con:  # QGIS draws the cracks by trend when it opens the layer
        (qml,) = con.execute("SELECT styleQML FROM layer_styles WHERE f_table_name = 'crack_history'").fetchone()
    assert 'attr="trend"' in qml and all(f'value="{trend}"' in qml for trend in HISTORY_COLOURS)
    epochs = gpd.read_file(out / "history.gpkg", layer="crack_epochs")
    seen = epochs.groupby("crack")["survey"].apply(list).tolist()
    assert seen[0] == [1, 2, 3] and sorted(seen[1:4]) == [[1, 2, 3], [1, 2, 3], [1, 3]] and seen[4:] == [[2, 3], [1, 2]]
    # read by the comparison of its first survey with the latest: A 2 mm wider; the stable ones no
    # wider than they could have widened unseen
    assert grown["widening_since_first_mm"] == pytest.approx(2, abs=0.5)
    stable = history.loc["stable"]
    assert (stable["widening_since_first_mm"].abs() < stable["detectable_widening_mm"]).all()
    assert history.loc["new", "widening_since_first_mm"] == pytest.approx(0, abs=0.3)  # second flight to third
    assert np.isnan(history.loc["not found (repaired?)", "widening_since_first_mm"])  # not in the latest
    assert sorted(stable["seen_in"]) == [2, 3, 3] and stable["widening_mm_per_year"].to_numpy() == pytest.approx(
        0, abs=0.3
    )
    assert (out / "history.csv").read_text().splitlines()[0].startswith("crack,survey,survey_name,flown")
    pairs = sorted(p.name for p in (out / "pairs").iterdir())
    assert pairs == ["01_flight-2024_to_flight-2025", "02_flight-2025_to_flight-2026"]
    assert all((out / "pairs" / p / "changes.gpkg").is_file() for p in pairs)
    since_first = out / "to_latest" / "01_flight-2024_to_flight-2026"
    assert [p.name for p in (out / "to_latest").iterdir()] == [since_first.name]
    widened_once = gpd.read_file(out / "pairs" / pairs[0] / "changes.gpkg", layer="changes")
    assert sorted(widened_once["status"]) == sorted(
        ["extended", "widened", "new", "unchanged", "unchanged", "not found (repaired?)"]
    )  # A extended, E read wide, B new, C and D unchanged, F missed
    against_latest = gpd.read_file(since_first / "changes.gpkg", layer="changes")["status"]
    assert sorted(against_latest) == sorted(
        ["extended", "unchanged", "unchanged", "unchanged", "new", "not found (repaired?)"]
    )
    page = (out / "report.html").read_text()
    assert "Crack history: flight-2024 → flight-2026 (3 surveys)" in page and "Crack length and width" in page
    from pipeline.errors import MsafError
    from pipeline.report.history import crack_history

    # the same history again (as the inbox writes it after each flight): nothing any change report
    # compared has changed, so each is used again, and the history is the same
    same = ReportConfig(min_area_m2=0, match_distance_m=0.01)
    again = crack_history([Path(f) for f in folders], out, same)
    assert again.reused == 3 and "(3 change reports used again" in again.summary()
    again_history = gpd.read_file(out / "history.gpkg", layer="crack_history").set_index("trend")
    pd.testing.assert_frame_equal(again_history, history)
    mask = Path(folders[0]) / "mask.tif"  # the first flight's mask rewritten: what compared it is compared again
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    assert crack_history([Path(f) for f in folders], out, same).reused == 1  # the second pair only
    from pipeline.report.comparison_record import comparison_key

    flights = Path(folders[0]), Path(folders[1])
    other_settings = same.model_copy(update={"change_tolerance": 0.2})
    assert comparison_key(*flights, same) == comparison_key(*flights, same) != comparison_key(*flights, other_settings)

    crack_history([Path(folders[0]), Path(folders[2])], out, CFG)  # again into the same folder: two surveys
    assert [p.name for p in (out / "pairs").iterdir()] == ["01_flight-2024_to_flight-2026"]
    assert not (out / "to_latest").exists()  # no comparison of this history's is left over from the last
    with pytest.raises(MsafError, match="two surveys or more"):
        crack_history([Path(folders[0])], tmp_path / "one", CFG)
    with pytest.raises(MsafError, match="given twice"):
        crack_history([Path(folders[0]), Path(folders[0]) / "."], tmp_path / "twice", CFG)


def test_an_earlier_surveys_cracks_are_drawn_on_the_latest_surveys_ground():
    """A crack last seen in an earlier survey lies where that flight's georeference put it: the
    registration that moved the latest survey onto it moves it back onto the latest's ground, also
    from a survey in another CRS than the comparison's working one; unregistered, it stays."""
    import shapely
    from affine import Affine

    from pipeline.report.history import Comparison, on_latest_ground
    from pipeline.report.registration import Registration

    line = shapely.LineString([(400000.10, 5000000.20), (400000.50, 5000000.20)])
    working = gpd.GeoDataFrame(geometry=[], crs="EPSG:32633")
    moved_onto_old = Registration(transform=Affine.translation(-0.05, 0.02), applied=True)  # latest -> earlier
    frame = gpd.GeoDataFrame({"defect_id": [7]}, geometry=[line], crs="EPSG:32633")
    placed = on_latest_ground(frame, Comparison(working, moved_onto_old))
    assert placed.geometry.iloc[0].bounds == pytest.approx((400000.15, 5000000.18, 400000.55, 5000000.18), abs=1e-9)
    assert placed["defect_id"].tolist() == [7] and placed.crs == frame.crs
    in_mercator = on_latest_ground(frame.to_crs("EPSG:3857"), Comparison(working, moved_onto_old))
    assert in_mercator.crs == "EPSG:3857"
    assert in_mercator.to_crs("EPSG:32633").geometry.iloc[0].bounds == pytest.approx(
        (400000.15, 5000000.18, 400000.55, 5000000.18), abs=1e-6
    )
    not_applied = Registration(transform=Affine.translation(-0.05, 0.02), applied=False)
    assert on_latest_ground(frame, Comparison(working, not_applied)).geometry.iloc[0].equals(line)
    assert on_latest_ground(frame, None).geometry.iloc[0].equals(line)


def test_a_history_of_surveys_without_cracks_has_no_cracks(tmp_path):
    """Three flights of a sound deck (the comparisons' tables are empty): no crack, no error."""
    from pipeline.report.history import crack_history

    folders = [write_mask_survey(tmp_path / f"flight-{year}", np.zeros((60, 90), np.uint8)) for year in (1, 2, 3)]
    result = crack_history(folders, tmp_path / "history", CFG)
    assert (result.cracks, result.surveys, sum(result.trends.values())) == (0, 3, 0)
    assert len(gpd.read_file(tmp_path / "history" / "history.gpkg", layer="surveys")) == 3


@pytest.mark.parametrize(
    ("seen", "statuses", "arrival", "departure", "expected"),
    [
        ([1, 2, 3], {"unchanged", "widened"}, set(), set(), "growing"),
        ([1, 2, 3], {"unchanged"}, set(), set(), "stable"),
        ([2, 3], {"new", "unchanged"}, {"new"}, set(), "new"),
        ([3], {"missed before (visible then)"}, {"missed before (visible then)"}, set(), "not seen in every survey"),
        ([1, 2], {"not found (repaired?)"}, set(), {"not found (repaired?)"}, "not found (repaired?)"),
        ([1], {"not detected (still visible)"}, set(), {"not detected (still visible)"}, "not seen in every survey"),
        (
            [1, 2],
            {"not seen (too dark or blurred)"},
            set(),
            {"not seen (too dark or blurred)"},
            "not seen in every survey",
        ),
        ([2, 3], {"extended"}, {"not covered"}, set(), "growing"),
    ],
)
def test_a_cracks_trend_follows_what_the_comparisons_called_its_pieces(seen, statuses, arrival, departure, expected):
    """Growth only where the comparison of the crack's first survey with the latest found it (it
    weighs widths against their uncertainty); a line broken where an image still showed the crack, or
    could not, is not a repair or a new crack."""
    from pipeline.report.history import trend

    assert trend(seen, 3, statuses, arrival, departure) == expected
