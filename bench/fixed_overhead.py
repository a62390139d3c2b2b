"""Fixed cost of one `msaf survey`: command start to first finished block, and total, for a 512² raster.

What a scheduled inbox of many small orthomosaics pays per file. Each mode runs in its own
process, a few times (median); the baseline is the same engine called in-process
(`pipeline.survey.run_survey`: no CLI, no Prefect), measured in the same run:

* engine     - run_survey in an already-started Python (model load + inference + COGs).
* cli-bare   - `msaf survey --no-track --no-report`: interpreter start, imports, one temporary
               Prefect API server, the flow.
* cli-server - the same against an already-running `prefect server` (PREFECT_API_URL).
* cli-full   - `msaf survey` with tracking and the report (a fresh MLflow store each time).

    python bench/fixed_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

MSAF = str(Path(sys.executable).with_name("msaf"))
PREFECT = str(Path(sys.executable).with_name("prefect"))


def write_raster(path: Path, size: int = 512) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    data = np.random.default_rng(0).integers(60, 200, (3, size, size), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500000, 5000000, 0.001, 0.001),
    ) as dst:
        dst.write(data)
    return path


def timed_cli(args: list[str], out: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first finished block, total seconds) of one CLI run."""
    started = time.perf_counter()
    process = subprocess.Popen([MSAF, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = float("nan")
    while process.poll() is None:
        if first != first and (list(out.glob(".msaf-blocks/*/block_*.blk")) or (out / "mask.tif").exists()):
            first = time.perf_counter() - started
        time.sleep(0.005)
    total = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"msaf {' '.join(args)} failed: {process.stderr.read()[-2000:] if process.stderr else ''}")
    return first, total


def engine_run(ortho: Path, out: Path, model: Path) -> tuple[float, float]:
    from pipeline.config import SurveyConfig
    from pipeline.stitch import stitch
    from pipeline.survey import infer_blocks, prepare_survey

    started = time.perf_counter()
    prepared = prepare_survey(ortho, out, SurveyConfig(device="cpu", gsd_policy="ignore"), model_path=model)
    infer_blocks(prepared)
    first = time.perf_counter() - started
    stitch(prepared)
    return first, time.perf_counter() - started


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    from flows.server import free_port, wait_healthy

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=os.environ | {"PREFECT_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_healthy(api, server, 120)
    return server, api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from pipeline.locations import shipped_model

    model = shipped_model()
    root = Path(tempfile.mkdtemp(prefix="msaf-overhead-"))
    ortho = write_raster(root / "ortho.tif")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {
        "PREFECT_HOME": str(root / "prefect"),
        "MSAF_HOME": str(root / "home"),
        "OMP_NUM_THREADS": "2",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    base = ["survey", str(ortho), "--model", str(model), "--device", "cpu"]
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in ("engine", "cli-bare", "cli-server", "cli-full")}
    server, api = start_server(root / "server-home")
    try:
        for i in range(args.repeats):
            results["engine"].append(engine_run(ortho, root / f"engine{i}", model))
            results["cli-bare"].append(
                timed_cli([*base, "--out", str(root / f"bare{i}"), "--no-track", "--no-report"], root / f"bare{i}", env)
            )
            results["cli-server"].append(
                timed_cli(
                    [*base, "--out", str(root / f"srv{i}"), "--no-track", "--no-report"],
                    root / f"srv{i}",
                    env | {"PREFECT_API_URL": api},
                )
            )
            shutil.rmtree(root / "home", ignore_errors=True)  # a fresh store: the worst case
            results["cli-full"].append(timed_cli([*base, "--out", str(root / f"full{i}")], root / f"full{i}", env))
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    table = Table(title=f"fixed overhead, 512² raster, median of {args.repeats} (CPU, shipped dsnet model)")
    for column in ("mode", "to first block (s)", "total (s)", "total / engine"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    engine_total = statistics.median(t for _, t in results["engine"])
    for mode, runs in results.items():
        first, total = statistics.median(f for f, _ in runs), statistics.median(t for _, t in runs)
        table.add_row(mode, f"{first:.2f}", f"{total:.2f}", f"{total / engine_total:.1f}x")
    Console().print(table)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
