"""bench/gpu_check.sh, the one command a GPU session runs first, in its dry mode: it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from pipeline.inference.device import cpu_has_native_bf16
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # surveys a raster in several processes


def _assert_the_dry_checks_numbers(tmp_path, done: subprocess.CompletedProcess) -> None:
    """What ``gpu_check.sh --dry`` (in the device view, as on the GPU) wrote in ``tmp_path``: every
    step's numbers, of this machine, in the form the README's GPU table is filled from."""
    assert done.returncode == 0, done.stderr[-3000:]
    survey = json.loads((tmp_path / "survey_throughput.json").read_text())
    modes = survey["sizes"]["128"] | json.loads((tmp_path / "survey_naive.json").read_text())["sizes"]["128"]
    assert set(modes) == {"model", "survey", "naive"} and survey["device"] == "cpu"
    assert all(m["seconds"] > 0 and m["mpix_s"] > 0 and m["peak_rss_mb"] > 0 for m in modes.values())
    cold = modes["survey"]  # and the same survey again in its process (--warm), its own seconds and stages
    assert cold["warm_mpix_s"] == pytest.approx(128 * 128 / 1e6 / cold["warm_seconds"])
    assert set(cold["warm_stages"]) == set(cold["stages"]) and "warm_seconds" not in modes["naive"]
    logs = {path.name for path in tmp_path.glob("*.log")}
    assert logs == {"survey.log", "engine.log", "model_speed.log", "survey_views.log", "naive.log"}  # each step's
    views = json.loads((tmp_path / "survey_views.json").read_text())  # multi-scale: views 1,2
    assert views["scales"] == "1,2" and set(views["sizes"]["128"]) == {"model", "survey"}
    assert views["sizes"]["128"]["model"]["seconds"] > survey["sizes"]["128"]["model"]["seconds"]  # 5x the work
    assert "results in" in done.stdout and "failed" not in done.stdout
    engine = json.loads((tmp_path / "engine_throughput.json").read_text())
    assert engine["machine"]["cores"] >= 1 and engine["machine"]["cpu"]  # whose numbers these are
    assert engine["machine"]["torch"] == torch.__version__
    one_core = {"in cache": {"1": 1.0}, "streaming": {"1": 1.0}}  # one core: nothing to compare
    assert engine["machine_scaling"] == {"before": one_core, "after": one_core}
    (one,) = engine["results"]
    assert one["cores"] == 1 and one["mpix_s"] > 0
    stages = one["stages"]
    expected = {"read + decode", "nodata fill", "decision + quantise", "block write (tiles compressed)", "COG layout"}
    assert expected | {"block store"} <= set(stages)
    assert stages["network (null)"] < one["seconds"]  # the null network is not what takes the time
    assert stages["block load (stitch)"] == 0  # this process inferred every block: none is read back
    cpu = one["cpu_stages"]  # each stage's CPU seconds: at most its wall seconds (threads' clocks)
    assert set(cpu) == set(stages) | {"rest (validation, glue, untimed work)"}
    assert all(cpu[k] <= stages[k] + 1e-3 for k in stages)
    assert cpu["read + decode"] > 0 and cpu["tile DEFLATE (its pool)"] > 0
    assert sum(cpu.values()) == pytest.approx(one["profiled_cpu_s"])  # the rest is what no stage took
    assert 0 < one["cpu_s"] < 2 * one["seconds"] + 0.5  # one core's process (its idle threads use none)
    # the rate is an unprofiled run's: its own seconds and CPU, not the profiled run's
    assert one["mpix_s"] == pytest.approx(128 * 128 / 1e6 / one["seconds"])
    assert one["profiled_mpix_s"] == pytest.approx(128 * 128 / 1e6 / one["profiled_seconds"])
    assert one["seconds"] != one["profiled_seconds"] and one["runs_mpix_s"] == [one["mpix_s"]]
    host = ("read + decode", "nodata fill", "block store", "block write (tiles compressed)")
    host += ("tile DEFLATE (its pool)", "COG layout")  # the GPU host's CPU work, in CPU seconds
    assert one["host_s"] == pytest.approx(sum(cpu[k] for k in host)) and one["host_s"] > 0
    assert one["host_mpix_s_per_core"] == pytest.approx(128 * 128 / 1e6 / one["host_s"])
    speed = json.loads((tmp_path / "model_speed.json").read_text())
    native_bf16 = ["bf16+channels_last"] if cpu_has_native_bf16() else []  # survey.precision bf16's row
    assert [r["mode"] for r in speed["rows"]] == ["fp32", "fp32+channels_last", *native_bf16]  # no CUDA rows
    for row in speed["rows"]:
        assert row["network"] == "msaf-dsnet.safetensors" and row["mpix_s"] > 0
        assert 200 < row["gflop_per_mpix"] < 280 and row["bf16_peak_share"] is None  # 233 at 256 px tiles
        assert row["tflop_s"] == pytest.approx(row["mpix_s"] * row["gflop_per_mpix"] / 1e3)  # GFLOP/s -> TFLOP/s
    assert not (tmp_path / "rasters").exists()  # generated rasters are not left behind


def test_a_gpu_check_step_that_fails_is_named_and_the_later_steps_still_run(tmp_path):
    """Code that never ran on CUDA may fail there in one place: the rest of a rare GPU session still counts."""
    python = tmp_path / "python"  # the interpreter the script runs, failing the survey and engine benches as CUDA might
    python.write_text(
        "#!/bin/sh\n"
        'case "$1" in *survey_throughput.py|*engine_throughput.py)\n'
        '  echo "RuntimeError: CUDA error: no kernel image" >&2; exit 1;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": str(python)},
        cwd=tmp_path,
    )
    assert done.returncode == 1
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("gpu_check: failed: survey engine survey_views naive (the other")
    assert all("no kernel image" in (out / f"{step}.log").read_text() for step in ("survey", "engine"))
    assert not (out / "survey_throughput.json").exists() and not (out / "engine_throughput.json").exists()
    assert json.loads((out / "model_speed.json").read_text())["rows"]  # ran after them
    assert not (out / "rasters").exists()


def test_the_engine_bench_runs_this_code_against_another_checkout_in_pairs(tmp_path):
    """``--against``: two one-core children at once, one per side, their seconds as a ratio. Against
    this very checkout both sides run the same code, so every ratio is near 1 (within 4x either way,
    however the suite's other worker loads the cores)."""
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
    # near 1 on an idle machine; the suite's other worker may load one of the two cores meanwhile
    assert len(ratios) == 2 and all(0.25 < r < 4 for r in ratios)
    assert lines[-1].startswith("this / that over 2 pairs: mean ")


def test_model_speed_counts_a_convolutions_flops_exactly_and_knows_the_chips_peaks():
    """2 FLOPs per multiply-add: a 3x3 convolution from 3 to 8 channels is 2 * 3 * 8 * 9 = 432 per
    pixel (bias and padding aside); the bf16 peak is looked up by the GPU's name, the specific first."""
    spec = importlib.util.spec_from_file_location("model_speed", REPO / "bench" / "model_speed.py")
    model_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model_speed)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert model_speed.flops_per_pixel(conv, 32) == 432
    assert model_speed.bf16_peak_tflops("NVIDIA H200") == 989.0
    assert model_speed.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert model_speed.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert model_speed.bf16_peak_tflops("Tesla T4") is None


def test_the_machines_own_core_scaling_is_measured_with_one_process_per_core():
    """The baseline the engine's speed-up is read against: n pinned processes' summed rate over one's.
    Each ratio is near n on idle cores; a busy or shared machine gives less, never much more."""
    spec = importlib.util.spec_from_file_location("machine", REPO / "bench" / "machine.py")
    machine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(machine)
    cores = len(os.sched_getaffinity(0))
    # more cores than there are: left out; three rounds, as a suite's other worker shares the machine
    scaling = machine.core_scaling([1, 2, cores + 1], seconds=0.05, rounds=3)
    assert set(scaling) == {"in cache", "streaming"}
    expected = [1, 2] if cores >= 2 else [1]
    for ratios in scaling.values():
        assert sorted(ratios) == expected and ratios[1] == 1.0
        assert all(0 < ratio < 1.5 * n for n, ratio in ratios.items())
    one = machine._summed_rate([sorted(os.sched_getaffinity(0))[0]], 128 << 10, 0.05)
    assert 1e8 < one < 1e13  # bytes per second of one core adding 128 KB arrays: a rate, not a count


def test_bench_children_import_their_own_checkout_and_keep_the_carried_wheels(monkeypatch, tmp_path):
    """A worktree's bench must time its own code (the editable install points at this checkout), and
    on a GPU host the wheels carried into /tmp/site must stay importable in the children."""
    spec = importlib.util.spec_from_file_location("childenv", REPO / "bench" / "childenv.py")
    childenv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(childenv)
    monkeypatch.setenv("PYTHONPATH", f"/tmp/site{os.pathsep}{REPO}")
    assert childenv.python_path(tmp_path).split(os.pathsep) == [str(tmp_path), "/tmp/site", str(REPO)]
    monkeypatch.delenv("PYTHONPATH")
    assert childenv.python_path(tmp_path) == str(tmp_path)


def _clone_with_bundle(tmp_path, kind: str):
    """A clone of this repository with a stand-in bundle in .gpu/KIND (the real one is downloaded)."""
    import tarfile

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    bundle = clone / ".gpu" / kind / "site.tar.xz"
    bundle.parent.mkdir(parents=True)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "marker.py").write_text("")
    with tarfile.open(bundle, "w:xz") as tar:
        tar.add(tmp_path / "site", arcname="site")
    return clone


def _run(clone, *command: str, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), cwd=clone, capture_output=True, text=True, env=env, timeout=timeout)


def _git(clone, *args: str) -> str:
    return _run(clone, "git", *args).stdout.strip()


def _mib(done: subprocess.CompletedProcess) -> float:
    return float(done.stdout.split("gpu_payload: ")[-1].split(" MiB")[0])


def test_the_device_view_fits_the_device_limit_runs_the_check_and_restores_the_branch(tmp_path):
    """A device call may send 64 MiB (tracked files, untracked-not-ignored ones, carried paths); this
    repository's tracked files are over it. ``gpu_payload.sh check`` checks out a view of the commit
    without what the check does not read; the check must run in it, dry on CPU (so it cannot rot),
    and write every step's numbers; ``restore`` must give the branch back whole."""
    clone = _clone_with_bundle(tmp_path, "check")

    def payload(*args: str) -> subprocess.CompletedProcess:
        return _run(clone, "bash", "bench/gpu_payload.sh", *args)

    whole = payload("size", "check")
    assert whole.returncode == 1 and _mib(whole) > 64  # the branch as it is cannot travel
    (clone / "README.md").write_text("edited\n")
    refused = payload("check")
    assert refused.returncode == 2 and "commit or stash" in refused.stderr
    _git(clone, "checkout", "--", "README.md")

    before = _git(clone, "rev-parse", "HEAD"), _git(clone, "rev-parse", "--abbrev-ref", "HEAD")
    view = payload("check")
    assert view.returncode == 0, view.stderr
    assert _git(clone, "rev-parse", "HEAD^") == before[0] != _git(clone, "rev-parse", "HEAD")  # a commit of its own
    assert not (clone / "models" / "checkpoints").exists() and not (clone / "data" / "sources" / "uav75").exists()
    assert (clone / "pipeline" / "assets" / "msaf-dsnet.safetensors").is_file()
    assert _mib(payload("size", "check")) + 36 < 64  # room for the real bundle (35 MB when built by gpu_wheels.sh)
    assert payload("check").returncode == 2  # already in a view
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(clone)}
    _assert_the_dry_checks_numbers(out, _run(clone, "bash", "bench/gpu_check.sh", "--dry", str(out), env=env))

    back = payload("restore")
    assert back.returncode == 0, back.stderr
    assert (_git(clone, "rev-parse", "HEAD"), _git(clone, "rev-parse", "--abbrev-ref", "HEAD")) == before
    assert (clone / "models" / "checkpoints" / "release-1.safetensors").is_file()
    assert _git(clone, "status", "--porcelain") == ""
    assert payload("restore").returncode == 2  # nothing to restore


NOT_ON_THE_GPU_IMAGE = """
import sys
BLOCKED = {"rasterio", "pyproj", "shapely", "zstandard", "isal", "platformdirs", "blake3", "mlflow", "prefect"}
class NotOnTheGpuImage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU image)")
sys.meta_path.insert(0, NotOnTheGpuImage())
"""


def test_the_training_view_trains_on_the_photos_without_the_packages_the_gpu_image_lacks(tmp_path):
    """``gpu_train.sh`` in the training view (photos, the teacher; 47 MiB with its pydantic bundle),
    with rasterio, pyproj, shapely, zstandard, ISA-L, MLflow and Prefect made unimportable as on
    the GPU image: it copies the photos into place, prepares, trains two small steps from the shipped
    model with the recipe's teacher and evaluates; the branch comes back whole."""
    from pipeline.checkpoint import read_metadata

    clone = _clone_with_bundle(tmp_path, "train")
    view = _run(clone, "bash", "bench/gpu_payload.sh", "train")
    assert view.returncode == 0, view.stderr
    assert (clone / "models" / "checkpoints" / "release-1.safetensors").is_file()  # params.yaml's teacher
    assert not (clone / "models" / "checkpoints" / "finetune-4.safetensors").exists()
    assert _mib(_run(clone, "bash", "bench/gpu_payload.sh", "size", "train")) + 3 < 64  # the real bundle: 2 MB
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NOT_ON_THE_GPU_IMAGE)
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": f"{blocker}:{clone}"}
    assert _run(clone, sys.executable, "-c", "import rasterio", env=env).returncode == 1  # the premise holds
    cut = _run(clone, "bash", "bench/gpu_train.sh", "--dry", str(tmp_path / "cut"), env=env | {"TRAIN_SECONDS": "1"})
    assert cut.returncode == 3, (cut.stdout + cut.stderr)[-3000:]  # the device's limit would have lost it all
    assert "run the same command again" in cut.stdout and (clone / ".gpu" / "train-run").is_dir()
    assert json.loads((tmp_path / "cut" / "schedule.json").read_text())["finished"] is False
    assert not (tmp_path / "cut" / "eval.json").exists()
    out = tmp_path / "out"
    trained = _run(clone, "bash", "bench/gpu_train.sh", "--dry", str(out), env=env, timeout=600)
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    assert json.loads((out / "schedule.json").read_text())["finished"] is True
    assert not list((clone / ".gpu" / "train-run").iterdir())  # the state is gone once the run ends
    meta = read_metadata(out / "candidate.safetensors")
    assert meta.class_names == ["background", "crack", "joint"] and meta.preset == "dsnet"
    schedule = json.loads((out / "schedule.json").read_text())
    assert (schedule["device"], schedule["epochs"], schedule["steps_per_epoch"]) == ("cpu", 1, 2)
    scores = json.loads((out / "eval.json").read_text())
    assert 0 < scores["score"] <= 1
    assert len((out / "history.csv").read_text().strip().splitlines()) == 2  # header + one epoch
    assert _run(clone, "bash", "bench/gpu_payload.sh", "restore").returncode == 0
    assert (clone / "models" / "checkpoints" / "finetune-4.safetensors").is_file()
    assert _git(clone, "status", "--porcelain") == ""
