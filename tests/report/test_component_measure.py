"""Defects measured in worker processes: the same tables, byte for byte, as in one process."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from pipeline import processes
from pipeline.config import ReportConfig
from pipeline.report import component_measure
from pipeline.report.build import report_survey
from pipeline.report.defects import build_defects
from pipeline.vectors import read_layer
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


def entities(dxf: str) -> str:
    """The ENTITIES section of a DXF drawing: what it draws (its header and objects hold the time)."""
    return dxf.split("\nENTITIES\n", 1)[1].split("\nENDSEC\n", 1)[0]


def test_defects_measured_in_processes_are_the_same_bytes(four_mosaics, tmp_path, monkeypatch):
    """The whole report with ``workers: 1`` and with 2: the defects measured in the workers and the
    files written by one of them while the page is drawn here are the same bytes."""
    from pipeline.report import build
    from pipeline.vectors import layer_names

    mask, confidence, ortho = four_mosaics
    calls, asides = [], []

    def counted(*args):
        calls.append(args[2])
        return processes.in_processes(*args)

    def aside(function, arguments, workers):
        asides.append(workers)
        return processes.Aside(function, arguments, workers)

    monkeypatch.setattr(component_measure, "in_processes", counted)
    monkeypatch.setattr(component_measure, "BATCH", 4)  # many batches from a small mosaic
    monkeypatch.setattr(build, "Aside", aside)
    folders = {}
    for workers in (1, 2):
        folders[workers] = folder = tmp_path / f"workers-{workers}"
        folder.mkdir()
        for path in (mask, confidence):
            shutil.copy(path, folder / path.name)
        found = report_survey(folder, ReportConfig(workers=workers, min_area_m2=0), image=ortho)
        assert calls == ([] if workers == 1 else [2])  # workers: 1 measures in this process
        assert asides[-1] == workers  # and writes its files here
    assert found.defects > 6 * component_measure.BATCH  # batches queued ahead on both workers
    assert found.by_class.keys() == {"crack", "spall"} and found.non_defects == {"joint": 1}
    here, there = folders[1], folders[2]
    for name in ("defects.csv", "defects.geojson"):
        assert (here / name).read_bytes() == (there / name).read_bytes(), name
    drawn = [entities((folder / "defects.dxf").read_text()) for folder in (here, there)]
    assert drawn[0] == drawn[1] and "LWPOLYLINE" in drawn[0]  # the drawing (its header holds the time)
    assert read_layer(here / "defects.gpkg", "defects")["width_method"].eq("image").sum() > 20  # from the photo
    assert layer_names(here / "defects.gpkg") == layer_names(there / "defects.gpkg")
    for layer in ("defects", "cracks", "crack_centerlines", "non_defects", "summary", "condition_cells"):
        one, two = read_layer(here / "defects.gpkg", layer), read_layer(there / "defects.gpkg", layer)
        assert (
            pd.DataFrame(one)
            .drop(columns="geometry", errors="ignore")
            .equals(pd.DataFrame(two).drop(columns="geometry", errors="ignore"))
        ), layer
        if layer != "summary":  # a table
            assert one.geometry.to_wkb().tolist() == two.geometry.to_wkb().tolist(), layer
    page = (there / "report.html").read_text().replace(there.name, here.name)  # the title names the folder
    assert (here / "report.html").read_text() == page


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


def _fail_with(code: int) -> None:
    raise OSError(code, os.strerror(code))


def test_work_aside_comes_back_from_its_worker_with_its_value_or_its_error():
    """A report's files are written aside while its page is drawn: the value comes back from the
    other process, and so does a full disk, still recognisable as one."""
    aside = processes.Aside(_square_and_pid, (7,), 2)
    square, pid = aside.result()
    assert square == 49 and pid != os.getpid() and aside.result() == (49, pid)
    failed = processes.Aside(_fail_with, (errno.ENOSPC,), 2)
    for _ in range(2):  # asked again, it raises again
        with pytest.raises(OSError) as raised:
            failed.result()
        assert raised.value.errno == errno.ENOSPC
    failed.wait()  # waits, and leaves the error to the caller's own
    assert processes.Aside(_square_and_pid, (3,), 1).result() == (9, os.getpid())  # one process: here


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


def _cpu_seconds(process) -> float:
    """A process's CPU seconds so far (0 once it is gone)."""
    import psutil

    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


@pytest.mark.parametrize("phase", ["measuring", "writing"])
def test_ctrl_c_while_workers_work_is_one_line_leaves_no_process_and_nothing_half_written(
    four_mosaics, tmp_path, phase
):
    """The workers share the report's process group, so a Ctrl-C reaches them too: the report stops
    in one line (exit 130) and its workers are gone. While they measure, nothing is written; while
    one writes the GIS files and the drawing (the page being drawn here), those files are finished
    first: no temporary file is left, and no page."""
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
    writing: list[Path] = []
    while report.poll() is None and time.monotonic() < deadline:
        workers = [p for p in psutil.Process(report.pid).children(recursive=True) if "python" in p.name()]
        writing = list(folder.glob(".defects.*.partial*"))
        # at work: their start is over (the report ignores a Ctrl-C while its workers are being started)
        busy = len(workers) >= 2 and any(_cpu_seconds(worker) > 0.3 for worker in workers)
        if busy and (phase == "measuring" or writing):
            break
        time.sleep(0.01)
    assert report.poll() is None and len(workers) >= 2, report.communicate()
    os.killpg(report.pid, signal.SIGINT)
    _, stderr = report.communicate(timeout=60)
    assert report.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted: no file was left half-written"], stderr
    time.sleep(1)
    assert not [p.pid for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    left = sorted(p.name for p in folder.iterdir() if p.name != ".msaf.lock")
    if phase == "measuring":
        assert left == ["confidence.tif", "mask.tif"]
    else:
        written = ["defects.csv", "defects.dxf", "defects.geojson", "defects.gpkg", "defects.parquet"]
        assert writing and left == ["confidence.tif", *written, "mask.tif"]
        assert len(read_layer(folder / "defects.gpkg", "defects")) > 20  # finished, not cut short
