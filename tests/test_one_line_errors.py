"""Expected mistakes in models, tracking store and disk space: one line on stderr, exit 2, outputs intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from pipeline.checkpoint import METADATA_KEY, read_metadata
from pipeline.inference.device import cpu_only_torch
from tests.conftest import assert_one_line_error, cpu_survey, msaf_in_process

MSAF = str(Path(sys.executable).with_name("msaf"))


def _edited_model(tiny_model: Path, out: Path, **changes) -> Path:
    meta = json.loads(read_metadata(tiny_model).model_dump_json())
    for key, value in changes.items():
        if key == "width":
            meta["architecture"]["width"] = value
        else:
            meta[key] = value
    save_file(load_file(str(tiny_model)), str(out), metadata={METADATA_KEY: json.dumps(meta)})
    return out


MODEL_CASES = {
    "tile_size_1": ({"tile_size": 1}, "tile_size: Input should be greater than or equal to 16"),
    "architecture_mismatch": ({"width": 48}, "weights do not match the architecture"),
    "future_format": ({"format_version": 99}, "checkpoint format 99"),
    "threshold_5": ({"thresholds": {"crack": 5.0}}, "the crack threshold must be a probability in (0, 1)"),
    "views_unsorted": ({"scale_thresholds": {"2,1": {"crack": 0.4}}}, "keyed by sorted scales such as '1,2'"),
    "views_threshold_0": ({"scale_thresholds": {"1,2": {"crack": 0.0}}}, "the crack threshold must be a probability"),
    "views_unknown_class": ({"scale_thresholds": {"1,2": {"spall": 0.4}}}, "a threshold for 'spall'"),
    "exposure_floor_300": ({"exposure_floor": 300.0}, "exposure_floor: Input should be less than or equal to 255"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_a_bad_model_file_is_one_line_before_any_work(tmp_path, tiny_model, crack_mosaic, case):
    changes, expected = MODEL_CASES[case]
    model = _edited_model(tiny_model, tmp_path / "edited.safetensors", **changes)
    result = msaf_in_process(*cpu_survey(crack_mosaic[0], tmp_path / "out", model, "--no-track"))  # one code path
    assert_one_line_error(result, expected)
    assert not (tmp_path / "out" / "mask.tif").exists()


LOADED_BY_A_SURVEY = """
import sys
from flows.cli import main
sys.argv = ["msaf", *sys.argv[1:]]
try:
    main()
finally:
    print(sorted(name for name in ("mlflow", "prefect", "torch") if name in sys.modules))
"""


def _survey_in_a_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`msaf ARGS` in a fresh Python that prints which of MLflow, Prefect and torch it loaded."""
    return subprocess.run(
        [sys.executable, "-c", LOADED_BY_A_SURVEY, *args], capture_output=True, text=True, timeout=120, env=env
    )


def _small_ortho(path: Path, crs: str | None = "EPSG:32633") -> Path:
    """An 8x8 RGB GeoTIFF at 1 mm (``crs`` None: without a CRS)."""
    import numpy as np
    import rasterio

    transform = rasterio.transform.from_origin(500000, 5000000, 0.001, 0.001)
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, crs=crs, transform=transform) as dst:
        dst.write(np.zeros((3, 8, 8), np.uint8))
    return path


EARLY_MISTAKES = {
    "missing": "input not found",
    "no_crs": "--assume-crs",
    "out_is_a_file": "is a file, not a folder",
    "scales_out_of_range": "--scales: each scale must be within 0.5-4, got 8",
    "scales_not_numbers": "--scales: scales must be numbers separated by commas (e.g. 1,2), got '1;2'",
    **({"cuda_on_a_cpu_build": "is a CPU-only build"} if cpu_only_torch() else {}),  # the suite's own torch
}


@pytest.mark.parametrize("mistake", list(EARLY_MISTAKES))
def test_a_mistaken_argument_is_one_line_before_prefect_mlflow_or_torch_load(tmp_path, mistake):
    """Loading the survey's machinery took 3-8 s (a mistyped path was one line after 9 s, now 0.6 s;
    a file given as --out 3.6 s, now 0.5 s; cuda with a CPU-only PyTorch 5.2 s, now 0.4 s): the
    arguments are checked first, and none of them is imported for it."""
    ortho, out = tmp_path / "deck.tif", tmp_path / "out"
    if mistake != "missing":
        _small_ortho(ortho, None if mistake == "no_crs" else "EPSG:32633")
    if mistake == "out_is_a_file":
        out.write_text("notes")
        out = out / "survey"
    device = "cuda" if mistake == "cuda_on_a_cpu_build" else "auto"
    views = {"scales_out_of_range": ["--scales", "1,8"], "scales_not_numbers": ["--scales", "1;2"]}.get(mistake, [])
    result = _survey_in_a_process("survey", str(ortho), "--out", str(out), "--device", device, *views)
    assert_one_line_error(result, EARLY_MISTAKES[mistake])
    assert result.stdout.strip() == "[]"
    assert not out.exists()


AREA_MISTAKES = {
    "missing": "area of interest not found",
    "not_vector": "cannot read the area of interest",
    "points": "holds no polygon",
    "no_crs": "have no CRS",
    "elsewhere": "does not overlap the orthomosaic",
}


@pytest.mark.parametrize("mistake", list(AREA_MISTAKES))
def test_a_mistaken_area_of_interest_is_one_line_before_prefect_mlflow_or_torch_load(tmp_path, mistake):
    import geopandas as gpd
    import shapely

    ortho, out = _small_ortho(tmp_path / "deck.tif"), tmp_path / "out"
    area = tmp_path / ("area.gpkg" if mistake == "no_crs" else "area.geojson")
    shapes = {
        "points": shapely.Point(500000.004, 4999999.996),
        "no_crs": shapely.box(500000, 4999999.992, 500000.004, 5000000),
        "elsewhere": shapely.box(600000, 4000000, 600010, 4000010),
    }
    if mistake == "not_vector":
        area.write_text("the deck, roughly")
    elif mistake in shapes:
        crs = None if mistake == "no_crs" else "EPSG:32633"
        gpd.GeoDataFrame(geometry=[shapes[mistake]], crs=crs).to_file(area)
    result = _survey_in_a_process("survey", str(ortho), "--out", str(out), "--aoi", str(area))
    assert_one_line_error(result, AREA_MISTAKES[mistake])
    assert result.stdout.strip() == "[]"
    assert not out.exists()


def test_a_mistaken_model_is_one_line_before_the_tracking_store_opens(tmp_path, crack_mosaic):
    """With a model named, the survey's own arguments are checked before MLflow's store opens (seconds):
    the store is not even created for a survey that was refused. The model itself is checked while
    Prefect's server boots, before Prefect or MLflow load in the command (3.2-3.5 s, now 2.3 s)."""
    import os

    store = tmp_path / "mlflow.db"
    result = _survey_in_a_process(
        *cpu_survey(crack_mosaic[0], tmp_path / "out", tmp_path / "typo.safetensors"),
        env=os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{store}"},
    )
    assert_one_line_error(result, "model file not found", "typo.safetensors")
    assert result.stdout.strip() == "['torch']"  # the checkpoint module's; not Prefect, not MLflow
    assert not store.exists()


def test_a_garbage_tracking_store_is_one_line_with_the_way_out(tmp_path, tiny_model, crack_mosaic):
    garbage = tmp_path / "mlflow.db"
    garbage.write_bytes(b"this is not a database" * 100)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{garbage}"}
    import os

    result = subprocess.run(
        [
            MSAF,
            *cpu_survey(crack_mosaic[0], tmp_path / "out", tiny_model, "--no-report"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | env,
    )
    assert_one_line_error(result, "--no-track")
    assert "MLFLOW_TRACKING_URI" in result.stderr and not (tmp_path / "out").exists()  # nothing left behind
    listed = subprocess.run([MSAF, "models", "list"], capture_output=True, text=True, timeout=120, env=os.environ | env)
    assert_one_line_error(listed, "cannot be used")


def test_a_survey_that_cannot_fit_on_disk_is_refused_before_it_starts(tmp_path, tiny_model):
    from tests.raster.test_input_policy import _plain_vrt

    vrt = _plain_vrt(tmp_path)  # a VRT is the cheap way to a 2,000,000 x 2,000,000 px raster
    vrt.write_text(
        vrt.read_text().replace('rasterXSize="128" rasterYSize="96"', 'rasterXSize="2000000" rasterYSize="2000000"')
    )
    result = subprocess.run(
        [
            MSAF,
            *cpu_survey(vrt, tmp_path / "out", tiny_model, "--no-track", "--allow-vrt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(result, "no space left on")
    assert "MB needed" in result.stderr and not (tmp_path / "out" / ".msaf-blocks").exists()


ENOSPC_DURING_SURVEY = """
import errno, os, sys, threading
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"  # as the CLI sets it, before Prefect is imported below
calls = {"n": 0}
original = os.replace
def replace(src, dst, *args, **kwargs):
    if "/.msaf-blocks/" in str(dst):
        calls["n"] += 1
        if calls["n"] > 1:  # the disk fills up after the first block
            raise OSError(errno.ENOSPC, "No space left on device")
    return original(src, dst, *args, **kwargs)
os.replace = replace
# The race CI met, made certain: the next chunk starts on the thread the failed one freed and reaches
# Prefect's cancel check just as the failed survey's task runner shuts down ("Crash detected!").
from prefect import task_engine
checked = task_engine.SyncTaskRunEngine.is_cancelled
started = {"chunks": 0}
def is_cancelled(self):
    event = (self.context or {}).get("cancel_event")
    if self.task.name == "infer blocks" and isinstance(event, threading.Event):
        started["chunks"] += 1
        if started["chunks"] > 1:
            event.wait(60)
    return checked(self)
task_engine.SyncTaskRunEngine.is_cancelled = is_cancelled
from flows.cli import main
sys.argv = ["msaf", *sys.argv[1:]]
main()
"""


def test_a_disk_that_fills_up_mid_survey_is_one_line_and_earlier_outputs_stay(
    tmp_path, tiny_model, surveyed, crack_mosaic
):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(surveyed, out)
    before = {name: (out / name).read_bytes() for name in ("mask.tif", "confidence.tif", "survey.json")}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            ENOSPC_DURING_SURVEY,
            *cpu_survey(crack_mosaic[0], out, tiny_model, "--no-track", "--block", "256", "--tta"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(result, f"no space left on {out}")
    assert {name: (out / name).read_bytes() for name in before} == before


ENOSPC_DURING_STITCH = """
import errno, sys
from pipeline.raster import cog
calls = {"n": 0}
original = cog.GeoTiffSink.write
def write(self, core, data):  # GDAL's own write fails the way a full disk makes it fail
    calls["n"] += 1
    if calls["n"] > 3:
        raise OSError(errno.ENOSPC, "No space left on device")
    return original(self, core, data)
cog.GeoTiffSink.write = write
from flows.cli import main
sys.argv = ["msaf", *sys.argv[1:]]
main()
"""


def test_a_disk_that_fills_up_during_the_stitch_is_one_line_and_keeps_the_blocks(
    tmp_path, tiny_model, surveyed, crack_mosaic
):
    """The stitch writes the COGs from the finished blocks: a full disk there is one line, the earlier
    mask stays, nothing half-written is left, and the blocks wait for the rerun."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(surveyed, out)
    before = {name: (out / name).read_bytes() for name in ("mask.tif", "confidence.tif", "survey.json")}
    command = cpu_survey(crack_mosaic[0], out, tiny_model, "--no-track", "--no-report", "--block", "256")
    result = subprocess.run(
        [sys.executable, "-c", ENOSPC_DURING_STITCH, *command], capture_output=True, text=True, timeout=300
    )
    assert_one_line_error(result, f"no space left on {out}")
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [p.name for p in out.iterdir() if "partial" in p.name or p.name.startswith(".tmp")]
    assert len(list(out.glob(".msaf-blocks/*/block_*.blk"))) == 9  # 700 x 530 in 256-px blocks: kept


def test_an_unreachable_tracking_server_is_one_line_within_seconds(tmp_path):
    """A closed port used to keep `msaf models list` silent for ~250 s of MLflow's retries."""
    import os
    import time

    from tests.conftest import run_msaf

    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # discard port: nothing listens
    started = time.monotonic()
    result = run_msaf("models", "list", cwd=tmp_path, env=env, timeout=60)
    assert time.monotonic() - started < 15
    assert_one_line_error(result, "the MLflow tracking store http://127.0.0.1:9 cannot be used", "--no-track")


SLOW_NETWORK_SURVEY = """
import sys, time
from pipeline.inference import runner
original = runner.TileRunner._probabilities
def slow(self, count):  # a network that takes a second per batch: a survey long enough to interrupt
    time.sleep(1.0)
    return original(self, count)
runner.TileRunner._probabilities = slow
from flows.cli import main
sys.argv = ["msaf", *sys.argv[1:]]
main()
"""


def test_ctrl_c_stops_a_survey_within_seconds_in_one_line_and_the_rerun_resumes(tmp_path, tiny_model, crack_mosaic):
    """A Ctrl-C used to wait for the running chunk of blocks (the inference threads did not know),
    and to stop the temporary Prefect server with the terminal's signal before the crash was logged
    ("Error logging to API"). Now: one line, exit 130, within a batch, no process left, resumable."""
    import os
    import signal
    import time

    import psutil

    out = tmp_path / "out"
    command = cpu_survey(crack_mosaic[0], out, tiny_model, "--no-track", "--no-report", "--block", "256")
    survey = subprocess.Popen(
        [sys.executable, "-c", SLOW_NETWORK_SURVEY, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + 180
    while not list(out.glob(".msaf-blocks/*/block_*.blk")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert survey.poll() is None, survey.communicate()[1]
    helpers = psutil.Process(survey.pid).children(recursive=True)  # the temporary Prefect server
    os.killpg(survey.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground group
    interrupted = time.monotonic()
    _, stderr = survey.communicate(timeout=120)
    assert time.monotonic() - interrupted < 15
    assert survey.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted: no file was left half-written"], stderr
    assert not (out / "mask.tif").exists()
    stored = len(list(out.glob(".msaf-blocks/*/block_*.blk")))
    assert 1 <= stored < 9  # 700 x 530 in 256-px blocks: stopped mid-way, finished blocks kept
    time.sleep(1)
    assert not [p.pid for p in helpers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    from tests.conftest import run_msaf

    rerun = run_msaf(*command)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((out / "survey.json").read_text())["tiling"]["blocks_reused"] == stored
