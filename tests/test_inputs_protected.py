"""No command writes over one of its own inputs: refused in one line before any work (issue 24)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.config import ReportConfig, SurveyConfig
from pipeline.errors import MsafError
from pipeline.report.build import report_survey
from pipeline.report.compare import compare_surveys
from pipeline.survey import prepare_survey
from tests.conftest import REPO, assert_one_line_error, cpu_survey, msaf_in_process, write_mask_survey, write_raster

SHIPPED = REPO / "pipeline" / "assets" / "msaf-dsnet.safetensors"
pytestmark = pytest.mark.slow  # real `msaf` processes


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["mask.tif", "report.html"])  # a survey output, a report output
def test_an_orthomosaic_named_like_an_output_is_not_surveyed_into_its_own_folder(tmp_path, name):
    ortho = write_raster(tmp_path / name, np.full((3, 64, 64), 128, np.uint8))
    before = md5(ortho)
    result = msaf_in_process(*cpu_survey(ortho, tmp_path, SHIPPED, "--no-track"))
    assert_one_line_error(result, f"would overwrite this input with its {name}", "choose another --out")
    assert md5(ortho) == before


def test_a_link_to_the_input_is_seen_through(tmp_path):
    ortho = write_raster(tmp_path / "ortho.tif", np.full((3, 64, 64), 128, np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "mask.tif").symlink_to(ortho)  # the survey would write through the link
    before = md5(ortho)
    result = msaf_in_process(*cpu_survey(out / "mask.tif", out, SHIPPED, "--no-track"))
    assert_one_line_error(result, "would overwrite this input with its mask.tif")
    assert md5(ortho) == before


def test_a_change_report_never_goes_into_a_survey_folder(tmp_path):
    mask = np.zeros((80, 80), np.uint8)
    mask[40:43, 10:70] = 1
    old = write_mask_survey(tmp_path / "old", mask)
    new = write_mask_survey(tmp_path / "new", mask)
    for folder in (old, new):
        report_survey(folder, ReportConfig())
    before = md5(old / "report.html")
    result = msaf_in_process("compare", str(old), str(new), "--out", str(old))
    assert_one_line_error(result, f"{old} is a survey folder", "choose another --out")
    with pytest.raises(MsafError, match="is a survey folder"):
        compare_surveys(old, new, new, ReportConfig())
    assert md5(old / "report.html") == before
    compare_surveys(old, new, tmp_path / "changes", ReportConfig())  # anywhere else is fine


def test_a_report_never_replaces_the_image_it_reads(tmp_path):
    mask = np.zeros((80, 80), np.uint8)
    mask[40:43, 10:70] = 1
    survey = write_mask_survey(tmp_path / "survey", mask)
    image = write_raster(survey / "report.html", np.full((3, 80, 80), 128, np.uint8), transform=None)
    result = msaf_in_process("report", str(survey), "--image", str(image))
    assert result.returncode == 2 and "would overwrite this input with its report.html" in result.stderr


def test_tiling_that_would_never_finish_is_refused_in_one_line(tmp_path):
    """`--block 1` used to be accepted: a padded batch of tiles per pixel, ~20 days for 512²."""
    ortho = write_raster(tmp_path / "ortho.tif", np.full((3, 64, 64), 128, np.uint8))
    result = msaf_in_process(*cpu_survey(ortho, tmp_path / "out", SHIPPED, "--no-track", "--block", "1"))
    assert_one_line_error(result, "block: Input should be greater than or equal to 32")
    assert not (tmp_path / "out" / "mask.tif").exists()
    for overrides, expected in (
        ({"tile": 8}, "greater than or equal to 16"),
        ({"batch": 0}, "greater than or equal to 1"),
        ({"overlap": 128}, r"overlap \(128\) must be under half the tile \(256\)"),
    ):
        with pytest.raises((MsafError, ValidationError), match=expected):
            prepare_survey(ortho, tmp_path / "out", SurveyConfig(device="cpu", **overrides), model_path=SHIPPED)
