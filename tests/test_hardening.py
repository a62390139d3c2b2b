"""Expected mistakes that used to end in a traceback (issue 24, item 8): each is one clear MsafError."""

from __future__ import annotations

import time

import numpy as np
import pytest
from rasterio.transform import Affine

from pipeline.config import ScalingConfig, load_params
from pipeline.errors import MsafError
from pipeline.job import parse_job
from pipeline.raster.source import open_source
from pipeline.report.survey_layers import load_defects
from pipeline.styles import class_colours
from pipeline.survey_folder import REPORT_OUTPUTS, SURVEY_OUTPUTS, prepare_output_folder
from pipeline.survey_record import read_survey_record
from tests.conftest import write_raster

PIXELS = np.random.default_rng(0).integers(0, 256, (3, 40, 50), dtype=np.uint8)


@pytest.mark.parametrize(
    ("transform", "words"),
    [
        (Affine(0.001, 0, 500000, 0, 0.001, 5000000), "south-up"),  # rows run north
        (Affine(-0.001, 0, 500000, 0, -0.001, 5000000), "mirrored east-west"),  # columns run west
    ],
)
def test_a_flipped_grid_is_refused_before_any_work(tmp_path, transform, words):
    write_raster(tmp_path / "flipped.tif", PIXELS, transform=transform)
    with pytest.raises(MsafError, match=f"the grid is {words}.*gdalwarp"):
        open_source(tmp_path / "flipped.tif", ScalingConfig())


def test_settings_and_job_files_that_are_not_utf8_or_hold_impossible_dates(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes("report:\n  chips: 8 # Brücke\n".encode("latin-1"))
    with pytest.raises(MsafError, match=r"latin1.yaml: not UTF-8 text \(byte 23\); save it as UTF-8"):
        load_params(tmp_path / "latin1.yaml")
    (tmp_path / "date.yaml").write_text("data:\n  split_seed: 2026-13-45\n")
    with pytest.raises(MsafError, match=r"date.yaml: a value YAML cannot read \(month must be in 1..12\); quote it"):
        load_params(tmp_path / "date.yaml")
    (tmp_path / "job.yaml").write_bytes("inspector: Müller\n".encode("latin-1"))
    with pytest.raises(MsafError, match="not UTF-8 text"):
        parse_job([], tmp_path / "job.yaml")
    (tmp_path / "job2.yaml").write_text("flight_date: 2026-13-45\n")
    with pytest.raises(MsafError, match=r"month must be in 1..12; write dates as YYYY-MM-DD"):
        parse_job([], tmp_path / "job2.yaml")


def test_a_deeply_nested_survey_record_is_corrupt_not_a_recursion_error(tmp_path):
    (tmp_path / "survey.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(MsafError, match=r"survey\.json is corrupt"):
        read_survey_record(tmp_path)


def test_any_number_of_classes_gets_colours():
    names = ["background", "crack", "joint", *(f"defect{i}" for i in range(30))]
    colours = class_colours(names)
    assert list(colours) == names and colours["crack"] == "#d7191c" and all(c.startswith("#") for c in colours.values())


def test_compare_with_a_broken_or_old_geopackage_is_one_line(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "defects.gpkg").write_text("not a geopackage")
    with pytest.raises(MsafError, match="is not a GeoPackage; re-run `msaf report`"):
        load_defects(tmp_path / "a", None)
    import geopandas as gpd
    from shapely.geometry import box

    (tmp_path / "b").mkdir()
    gpd.GeoDataFrame({"class": ["crack"]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:32633").to_file(
        tmp_path / "b" / "defects.gpkg", layer="defects"
    )
    with pytest.raises(MsafError, match=r"has no layer .crack_centerlines. .*older release"):
        load_defects(tmp_path / "b", None, "crack_centerlines")


def test_a_folder_where_an_output_file_goes_is_refused_before_inference(tmp_path):
    (tmp_path / "out" / "report.html").mkdir(parents=True)
    with pytest.raises(MsafError, match=r"report\.html is a folder where a file is written"):
        prepare_output_folder(tmp_path / "out", SURVEY_OUTPUTS + REPORT_OUTPUTS)


def test_schedule_checks_its_cron_and_its_server_first():
    from flows.cli.surveys import _check_cron, _check_server

    _check_cron("0 2 * * *")
    with pytest.raises(MsafError, match=r"--cron '0 25 \* \* \*' is not a cron schedule"):
        _check_cron("0 25 * * *")
    started = time.perf_counter()
    with pytest.raises(MsafError, match=r"no Prefect server answers at http://127.0.0.1:9/api .*prefect server start"):
        _check_server("http://127.0.0.1:9/api")
    assert time.perf_counter() - started < 10
