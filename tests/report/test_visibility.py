"""New and not-found cracks re-read in both orthomosaics: a crack the model missed in one flight
but whose line both images show is not a change; a repaired or truly new one still is."""

import geopandas as gpd
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from pipeline.config import ReportConfig
from pipeline.report.compare import compare_surveys
from pipeline.report.visibility import MIN_CONTRAST, still_visible
from tests.conftest import write_mask_survey
from tests.report.test_registration import _ortho, _reflown, _wall

ROWS = {"kept": 60, "missed now": 140, "repaired": 220, "missed before": 300, "appeared": 380}


def _with_lines(rgb: np.ndarray, names: list[str]) -> np.ndarray:
    """The wall with a dark 3-px crack (40 % of the light, edges blurred as optics blur them) on each named row."""
    shade = np.ones(rgb.shape[:2])
    for name in names:
        shade[ROWS[name] : ROWS[name] + 3, 100:400] = 0.4
    return rgb * gaussian_filter(shade, 0.8)[..., None]


def _mask(names: list[str], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for name in names:
        mask[ROWS[name] : ROWS[name] + 3, 100:400] = 1
    return mask


def test_a_crack_either_flight_missed_but_both_images_show_is_not_a_change(tmp_path):
    wall = _wall(0)
    height, width = 440, 520
    old_image = _ortho(
        tmp_path / "old.tif",
        _with_lines(wall, ["kept", "missed now", "repaired", "missed before"])[:height, :width].astype(np.uint8),
    )
    reflown = _reflown(_with_lines(wall, ["kept", "missed now", "missed before", "appeared"]), 37, 21)
    new_image = _ortho(tmp_path / "new.tif", reflown[:height, :width])
    write_mask_survey(tmp_path / "old", _mask(["kept", "missed now", "repaired"], (height, width)))
    new_mask = _mask(["kept", "missed before", "appeared"], (height, width))  # the model missed "missed now"
    write_mask_survey(tmp_path / "new", np.roll(new_mask, (-21, 37), axis=(0, 1)))
    cfg = ReportConfig(min_area_m2=0, match_distance_m=0.01)
    result = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "changes", cfg, old_image, new_image)
    assert result.registration.applied
    counts = {status: n for status, n in result.changes.items() if n}
    assert counts == {
        "unchanged": 1,
        "not detected (still visible)": 1,
        "not found (repaired?)": 1,
        "missed before (visible then)": 1,
        "new": 1,
    }
    changes = gpd.read_file(tmp_path / "changes" / "changes.gpkg", layer="changes").set_index("status")
    y_top = 5000000  # write_mask_survey's grid: row r lies at northing 5000000 - r mm
    where = {status: round((y_top - changes.loc[status].geometry.bounds[3]) * 1000) for status in changes.index}
    assert where["not detected (still visible)"] == pytest.approx(ROWS["missed now"], abs=2)
    assert where["not found (repaired?)"] == pytest.approx(ROWS["repaired"], abs=2)
    assert where["missed before (visible then)"] == pytest.approx(ROWS["missed before"], abs=2)
    assert where["new"] == pytest.approx(ROWS["appeared"], abs=2)
    # the repaired crack's line is gone from the new image; the one the model missed is not
    assert changes.loc["not found (repaired?)", "line_contrast_new"] < MIN_CONTRAST
    assert (
        changes.loc["not detected (still visible)", "line_contrast_new"]
        > 0.5 * changes.loc["not detected (still visible)", "line_contrast_old"]
    )
    assert changes.loc["new", "line_contrast_old"] < MIN_CONTRAST < changes.loc["new", "line_contrast_new"]


def test_still_visible_is_half_the_other_contrast_and_never_below_the_floor():
    assert still_visible(30.0, 50.0) and not still_visible(20.0, 50.0)
    assert still_visible(MIN_CONTRAST, 4.0) and not still_visible(MIN_CONTRAST - 0.1, 4.0)
    assert not still_visible(float("nan"), 10.0) and still_visible(12.0, float("nan"))


def test_a_crack_lost_where_the_new_image_is_too_blurred_to_show_it_is_not_seen_not_repaired(tmp_path):
    """The new flight (other light, noise, JPEG) is defocused over one band of the wall (sigma 5 px),
    where the model missed a crack the old survey found: its report rates that band too blurred, and
    the change report calls the crack "not seen (too dark or blurred)", not "not found (repaired?)".
    The repaired crack on sharp ground and the crack that appeared stay what they are."""
    from pipeline.config import ConditionConfig
    from pipeline.report.build import report_survey

    wall = _wall(0)
    height, width = 440, 520
    old_image = _ortho(
        tmp_path / "old.tif", _with_lines(wall, ["kept", "missed now", "repaired"])[:height, :width].astype(np.uint8)
    )
    reflown = _reflown(_with_lines(wall, ["kept", "missed now", "appeared"]), 0, 0)[:height, :width].astype(float)
    reflown[100:200] = gaussian_filter(reflown[80:220], (5, 5, 0))[20:120]  # one band out of focus
    new_image = _ortho(tmp_path / "new.tif", np.clip(reflown, 0, 255).astype(np.uint8))
    write_mask_survey(tmp_path / "old", _mask(["kept", "missed now", "repaired"], (height, width)))
    write_mask_survey(tmp_path / "new", _mask(["kept", "appeared"], (height, width)))  # "missed now" lost in the blur
    cfg = ReportConfig(min_area_m2=0, match_distance_m=0.01, condition=ConditionConfig(cell_m=0.1))
    report_survey(tmp_path / "old", cfg, image=old_image)
    assert set(report_survey(tmp_path / "new", cfg, image=new_image).unrated_m2) == {"too blurred"}
    cells = gpd.read_file(tmp_path / "new" / "defects.gpkg", layer="condition_cells").set_index(["row", "col"])
    assert set(cells.loc[[(1, c) for c in range(1, 5)], "sharpness"]) == {"too blurred"}  # rows 100-200 mm
    assert "too blurred" not in set(cells.loc[[(r, c) for r in (0, 2) for c in range(5)], "sharpness"])
    result = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "changes", cfg, old_image, new_image)
    assert result.registration.east_m == pytest.approx(0, abs=2e-4) or not result.registration.applied
    counts = {status: n for status, n in result.changes.items() if n}
    assert counts == {"unchanged": 1, "not seen (too dark or blurred)": 1, "not found (repaired?)": 1, "new": 1}
    changes = gpd.read_file(tmp_path / "changes" / "changes.gpkg", layer="changes").set_index("status")
    y_top = 5000000
    where = {status: round((y_top - changes.loc[status].geometry.bounds[3]) * 1000) for status in changes.index}
    assert where["not seen (too dark or blurred)"] == pytest.approx(ROWS["missed now"], abs=2)
    assert where["not found (repaired?)"] == pytest.approx(ROWS["repaired"], abs=2)
    assert "not seen (too dark or blurred)" in (tmp_path / "changes" / "report.html").read_text()
