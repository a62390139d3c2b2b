"""Defects measured in worker processes: the same tables, byte for byte, as in one process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline import processes
from pipeline.config import ReportConfig
from pipeline.report import component_measure
from pipeline.report.defects import build_defects
from tests.conftest import write_raster

CLASSES = ["background", "crack", "spall", "joint"]


@pytest.fixture(scope="module")
def four_mosaics(tmp_path_factory, crack_mosaic) -> tuple[Path, Path, Path]:
    """The crack mosaic and its truth tiled 2 x 2, with spalls, a joint and a confidence layer on the
    same grid: (mask, confidence, orthomosaic)."""
    root = tmp_path_factory.mktemp("four")
    with rasterio.open(crack_mosaic[0]) as src:
        image, transform = np.tile(src.read(), (1, 2, 2)), src.transform
    with rasterio.open(crack_mosaic[1]) as src:
        mask = np.tile(src.read(1), (2, 2))
    mask[mask > 1] = 0  # the truth's nodata: background here
    for row, col in ((40, 60), (400, 900), (900, 300)):
        mask[row : row + 25, col : col + 30] = 2  # spalls: defects measured by area
    mask[600:604, 100:1300] = 3  # a joint: outlined, never measured
    confidence = np.random.default_rng(5).integers(0, 256, mask.shape, dtype=np.uint8)
    tags = {"MSAF_CLASSES": json.dumps(CLASSES)}
    return (
        write_raster(root / "mask.tif", mask[None], transform=transform, nodata=255, tags=tags),
        write_raster(root / "confidence.tif", confidence[None], transform=transform),
        write_raster(root / "ortho.tif", image, transform=transform),
    )


def test_defects_measured_in_processes_are_the_same_bytes(four_mosaics, monkeypatch):
    mask, confidence, ortho = four_mosaics
    calls = []

    def counted(*args):
        calls.append(args[2])
        return processes.in_processes(*args)

    monkeypatch.setattr(component_measure, "in_processes", counted)
    monkeypatch.setattr(component_measure, "BATCH", 4)  # many batches from a small mosaic
    here = build_defects(mask, confidence, CLASSES, ReportConfig(workers=1, min_area_m2=0), ortho)
    assert calls == []  # workers: 1 measures in this process
    workers = build_defects(mask, confidence, CLASSES, ReportConfig(workers=2, min_area_m2=0), ortho)
    assert calls == [2]
    assert len(here.defects) > 6 * component_measure.BATCH  # batches queued ahead on both workers
    assert set(here.defects["class"]) == {"crack", "spall"} and len(here.non_defects) == 1
    assert here.defects["width_method"].eq("image").sum() > 20  # widths from the orthomosaic, in the workers
    for name in ("defects", "centerlines", "non_defects"):
        one, two = getattr(here, name), getattr(workers, name)
        assert one.drop(columns="geometry").equals(two.drop(columns="geometry")), name
        assert one.geometry.to_wkb().tolist() == two.geometry.to_wkb().tolist(), name
    assert here.summary.equals(workers.summary) and here.scale_error == workers.scale_error


def test_auto_measures_few_defects_here(four_mosaics, monkeypatch):
    mask, _, _ = four_mosaics
    monkeypatch.setattr(component_measure, "in_processes", None)  # would fail if called
    tables = build_defects(mask, None, CLASSES, ReportConfig(min_area_m2=0.0005))
    assert 0 < len(tables.defects) < component_measure.MIN_FOR_PROCESSES


def _square_and_pid(value: int) -> tuple[int, int]:
    return value * value, os.getpid()


def test_work_in_processes_comes_back_in_order():
    results = list(processes.in_processes(_square_and_pid, ((i,) for i in range(40)), 2))
    assert [square for square, _ in results] == [i * i for i in range(40)]
    assert os.getpid() not in {pid for _, pid in results}


def _count_in(queue) -> None:
    queue.put(processes.process_count("auto"))


def test_a_daemonic_process_measures_in_itself():
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_count_in, args=(queue,), daemon=True)
    worker.start()
    assert queue.get(timeout=60) == 1
    worker.join(60)
    assert processes.process_count(3) == 3 and processes.process_count("auto") == processes.usable_cores()


def test_a_script_without_a_main_guard_runs_once(four_mosaics, tmp_path):
    """The workers never run the caller's script again (the standard library's spawn would, and
    every worker would start the whole report over)."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from pipeline.config import ReportConfig
            from pipeline.report.defects import build_defects
            print("script started", flush=True)
            tables = build_defects(Path({str(four_mosaics[0])!r}), None, {CLASSES!r}, ReportConfig(workers=2))
            print("defects", len(tables.defects), flush=True)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("script started") == 1
    assert done.stdout.splitlines()[-1].startswith("defects ") and int(done.stdout.split()[-1]) > 0


def test_ctrl_c_while_workers_measure_is_one_line_leaves_no_process_and_no_report(four_mosaics, tmp_path):
    """The workers share the report's process group, so a Ctrl-C reaches them too: the report stops
    in one line (exit 130), its workers are gone, and nothing half-written is left in the folder."""
    import shutil
    import signal
    import time

    import psutil

    mask, confidence, ortho = four_mosaics
    folder = tmp_path / "survey"
    folder.mkdir()
    for path in (mask, confidence):
        shutil.copy(path, folder / path.name)
    params = tmp_path / "params.yaml"
    params.write_text("report:\n  workers: 2\n  min_area_m2: 0\n")
    report = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("msaf")),
            "report",
            str(folder),
            "--image",
            str(ortho),
            "--params",
            str(params),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + 120
    workers: list[psutil.Process] = []
    while len(workers) < 2 and report.poll() is None and time.monotonic() < deadline:
        workers = [p for p in psutil.Process(report.pid).children(recursive=True) if "python" in p.name()]
        time.sleep(0.05)
    assert report.poll() is None and len(workers) >= 2, report.communicate()
    os.killpg(report.pid, signal.SIGINT)
    _, stderr = report.communicate(timeout=60)
    assert report.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted: no output was finalised"], stderr
    time.sleep(1)
    assert not [p.pid for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["confidence.tif", "mask.tif"]
