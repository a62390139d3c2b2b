"""One survey folder, one survey: a lock, outputs that describe one run, and one line for a broken folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.config import ReportConfig, SurveyConfig
from pipeline.report.build import report_survey
from pipeline.survey import run_survey
from pipeline.survey_folder import REPORT_OUTPUTS, exclusive
from tests.conftest import assert_one_line_error, cpu_survey, msaf_in_process, run_msaf, write_raster

CPU = SurveyConfig(device="cpu", gsd_policy="ignore", batch=4)


def _copy_survey(surveyed: Path, out: Path) -> Path:
    shutil.copytree(surveyed, out, ignore=shutil.ignore_patterns(".msaf*"))
    return out


def test_a_second_survey_into_a_busy_folder_is_refused_and_the_lock_dies_with_its_holder(
    tmp_path, tiny_model, crack_mosaic
):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pipeline.survey_folder import exclusive\n"
            f"with exclusive({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = run_msaf(
            *cpu_survey(crack_mosaic[0], out, tiny_model, "--no-track", "--no-report"),
        )
        assert_one_line_error(busy, "in use by another survey")
        assert not (out / "mask.tif").exists()
        report = run_msaf("report", str(out))
        assert_one_line_error(report, "in use by another survey")
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the flock
        holder.wait()
    with exclusive(out), exclusive(out):  # free again, and re-entrant within a process
        pass


def test_a_new_mask_retires_the_previous_report(tmp_path, tiny_model, surveyed, crack_mosaic):
    out = _copy_survey(surveyed, tmp_path / "out")
    report_survey(out, ReportConfig())
    assert all((out / name).exists() for name in REPORT_OUTPUTS)
    other = write_raster(tmp_path / "other.tif", np.full((3, 64, 64), 90, np.uint8))
    record = run_survey(other, out, CPU, model_path=tiny_model)  # e.g. the report of this rerun then fails
    assert not any((out / name).exists() for name in REPORT_OUTPUTS)
    assert json.loads((out / "survey.json").read_text())["created_utc"] == record.created_utc
    with rasterio.open(out / "mask.tif") as mask:
        assert mask.shape == (64, 64) and mask.tags()["MSAF_CREATED_UTC"] == record.created_utc


def test_a_moved_survey_folder_still_reports(tmp_path, surveyed):
    out = _copy_survey(surveyed, tmp_path / "first")
    moved = tmp_path / "archive" / "2026" / "bridge-12"
    moved.parent.mkdir(parents=True)
    shutil.move(out, moved)
    summary = report_survey(moved, ReportConfig())
    assert summary.defects > 0 and (moved / "report.html").is_file()


def _shrunk_confidence(folder: Path, surveyed: Path) -> str:
    with rasterio.open(folder / "confidence.tif") as ds:
        profile, data = ds.profile, ds.read(1)[:100, :100]
    profile.update(width=100, height=100)
    (folder / "confidence.tif").unlink()
    with rasterio.open(folder / "confidence.tif", "w", **profile) as ds:
        ds.write(data, 1)
    return "not on the grid of mask.tif"


def _corrupt_record(folder: Path, surveyed: Path) -> str:
    (folder / "survey.json").write_text('{"input": {"path": ')
    return "survey.json is corrupt"


def _other_run(folder: Path, surveyed: Path) -> str:
    record = json.loads((folder / "survey.json").read_text())
    (folder / "survey.json").write_text(json.dumps(record | {"created_utc": "2020-01-01T00:00:00+00:00"}))
    return "come from different runs"


def _unknown_class(folder: Path, surveyed: Path) -> str:
    with rasterio.open(folder / "mask.tif", "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        data = ds.read(1)
        data[10:20, 10:20] = 7
        ds.write(data, 1)
    return "holds class id 7"


def _one_class(folder: Path, surveyed: Path) -> str:
    record = json.loads((folder / "survey.json").read_text())
    record["model"]["classes"] = ["background"]
    (folder / "survey.json").write_text(json.dumps(record))
    return "holds class id 1"


CASES = {
    "confidence_size": _shrunk_confidence,
    "corrupt_record": _corrupt_record,
    "other_run": _other_run,
    "unknown_class": _unknown_class,
    "one_class": _one_class,
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_broken_survey_folder_isassert_one_line_error(tmp_path, surveyed, case):
    folder = _copy_survey(surveyed, tmp_path / "s")
    expected = CASES[case](folder, surveyed)
    assert_one_line_error(msaf_in_process("report", str(folder)), expected)
    assert not (folder / "report.html").exists()


def test_an_orthomosaic_in_another_crs_is_refused_for_widths(tmp_path, surveyed, crack_mosaic):
    folder = _copy_survey(surveyed, tmp_path / "s")
    other = tmp_path / "other-crs.tif"
    shutil.copy(crack_mosaic[0], other)
    with rasterio.open(other, "r+") as ds:
        ds.crs = "EPSG:32634"
    assert_one_line_error(msaf_in_process("report", str(folder), "--image", str(other)), "differs from the mask's")


def test_a_grey_orthomosaic_for_widths_is_refused_as_the_survey_refuses_it(tmp_path, surveyed, crack_mosaic):
    """A one-band copy of the surveyed orthomosaic, on its grid: report and compare say what they
    need in one line before any work (it broke the report's thumbnails with a traceback)."""
    grey = tmp_path / "grey.tif"
    with rasterio.open(crack_mosaic[0]) as src:
        profile = src.profile | {"count": 1, "photometric": "MINISBLACK"}
        with rasterio.open(grey, "w", **profile) as dst:
            dst.write(src.read(1), 1)
    expected = "grey.tif: 1 band(s); expected 3 (RGB) or 4 (RGB + alpha)"
    folder = _copy_survey(surveyed, tmp_path / "s")
    assert_one_line_error(msaf_in_process("report", str(folder), "--image", str(grey)), expected)
    assert not (folder / "report.html").exists()
    later = _copy_survey(surveyed, tmp_path / "later")
    compared = msaf_in_process(
        "compare", str(folder), str(later), "--out", str(tmp_path / "c"), "--new-image", str(grey)
    )
    assert_one_line_error(compared, expected)
    assert not (tmp_path / "c" / "changes.gpkg").exists()


def test_a_survey_of_only_background_reports_no_defects(tmp_path, surveyed):
    folder = _copy_survey(surveyed, tmp_path / "s")
    with rasterio.open(folder / "mask.tif", "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        data = ds.read(1)
        ds.write(np.where(data == 255, 255, 0).astype(np.uint8), 1)
    record = json.loads((folder / "survey.json").read_text())
    record["model"]["classes"] = ["background"]
    (folder / "survey.json").write_text(json.dumps(record))
    started = time.perf_counter()
    result = run_msaf("report", str(folder))
    assert result.returncode == 0, result.stderr
    assert "no defects found" in result.stdout and time.perf_counter() - started < 120


def test_a_gsd_mismatch_is_stated_in_the_report_itself(tmp_path, surveyed):
    folder = _copy_survey(surveyed, tmp_path / "s")
    record = json.loads((folder / "survey.json").read_text())
    record["gsd_warning"] = (
        "veg.tif: ground sample distance 500.00 mm differs from the model's training GSD "
        "1.00 mm by 500.0x (tolerance 2.0x); resample the orthomosaic or use a matching model"
    )
    (folder / "survey.json").write_text(json.dumps(record))
    report_survey(folder, ReportConfig())
    html = (folder / "report.html").read_text()
    assert "differs from the model&#39;s training GSD" in html and "not reliable at this ground sample distance" in html


def test_taking_a_folder_sweeps_away_what_a_killed_run_left_half_written(tmp_path):
    from pipeline.survey_folder import exclusive

    folder = tmp_path / "survey"
    folder.mkdir()
    leftovers = [".defects.k2j4.partial.gpkg", ".mask.tif.blocks.partial.tif", ".report.x1.partial.html"]
    for name in [*leftovers, "defects.gpkg", "notes.partial.txt"]:
        (folder / name).write_text("x")
    with exclusive(folder):
        assert sorted(p.name for p in folder.iterdir()) == [".msaf.lock", "defects.gpkg", "notes.partial.txt"]


def test_a_folder_taken_for_work_that_was_refused_is_removed_and_one_that_holds_anything_is_kept(tmp_path):
    """A refused survey leaves no output behind: the folder it created holds only the lock, and goes."""
    from pipeline.errors import MsafError

    fresh, existing, written = tmp_path / "fresh" / "out", tmp_path / "existing", tmp_path / "written"
    with pytest.raises(MsafError), exclusive(fresh), exclusive(fresh):  # re-entrant: removed once, at the last
        raise MsafError("the tracking store cannot be used")
    assert not fresh.exists() and fresh.parent.is_dir()
    existing.mkdir()
    with exclusive(existing):
        pass
    assert [p.name for p in existing.iterdir()] == [".msaf.lock"]  # the user's folder stays
    with exclusive(written):
        (written / "mask.tif").write_bytes(b"x")
    assert sorted(p.name for p in written.iterdir()) == [".msaf.lock", "mask.tif"]
