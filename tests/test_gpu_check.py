"""bench/gpu_check.sh, the one command a GPU session runs first, in its dry mode: it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # surveys a raster in several processes


def test_the_gpu_check_runs_dry_on_cpu_and_writes_its_numbers(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    survey = json.loads((tmp_path / "survey_throughput.json").read_text())
    modes = survey["sizes"]["256"]
    assert set(modes) == {"model", "survey"} and survey["device"] == "cpu"
    assert all(m["seconds"] > 0 and m["mpix_s"] > 0 and m["peak_rss_mb"] > 0 for m in modes.values())
    engine = json.loads((tmp_path / "engine_throughput.json").read_text())
    (one,) = engine["results"]
    assert one["cores"] == 1 and one["mpix_s"] > 0
    stages = one["stages"]
    expected = {"read + decode", "nodata fill", "decision + quantise", "block write (tiles compressed)", "COG layout"}
    assert expected | {"block store"} <= set(stages)
    assert stages["network (null)"] < one["seconds"]  # the null network is not what takes the time
    assert not (tmp_path / "rasters").exists()  # generated rasters are not left behind


def test_the_engine_bench_runs_this_code_against_another_checkout_in_pairs(tmp_path):
    """``--against``: two one-core children at once, one per side, their seconds as a ratio. Against
    this very checkout both sides run the same code, so every ratio is near 1 (not 0, not 2)."""
    bench = [sys.executable, str(REPO / "bench" / "engine_throughput.py"), "--size", "256", "--block", "256"]
    done = subprocess.run(
        [*bench, "--workdir", str(tmp_path), "--against", str(REPO), "--pairs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if len(os.sched_getaffinity(0)) < 2:
        assert done.returncode != 0 and "needs two cores" in done.stderr
        return
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    ratios = [float(line.rsplit("ratio ", 1)[1]) for line in lines if line.startswith("pair ")]
    assert len(ratios) == 2 and all(0.5 < r < 2 for r in ratios)
    assert lines[-1].startswith("this / that over 2 pairs: mean ")
