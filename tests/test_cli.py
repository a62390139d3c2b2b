"""The `msaf` console script end to end: real processes, real files, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, write_params

MSAF = [str(Path(sys.executable).with_name("msaf"))]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MSAF, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_train_then_evaluate(tmp_path, cfd_subset):
    params = write_params(tmp_path / "params.yaml", cfd_subset / "images", cfd_subset / "masks")
    trained = run("train", "--params", str(params), "--set", "train.epochs=2")
    assert trained.returncode == 0, trained.stderr
    assert "epoch   1/2" in trained.stdout and "epoch   2/2" in trained.stdout
    model = tmp_path / "model.safetensors"
    assert model.is_file()

    out = tmp_path / "metrics.json"
    evaluated = run(
        "evaluate",
        "--model",
        str(model),
        "--images",
        str(cfd_subset / "images"),
        "--masks",
        str(cfd_subset / "masks"),
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "crack" in evaluated.stdout and "tolerant F1" in evaluated.stdout
    summary = json.loads(out.read_text())
    assert summary["images"] == 10 and set(summary["classes"]) == {"background", "crack"}
    assert sum(summary["classes"][c]["support"] for c in summary["classes"]) == 10 * 480 * 320


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        ("drop_mask", ("001.jpg", "has no mask")),
        ("bad_key", ("params.yaml", "train.lr")),
        ("unknown_value", ("masks/", "[255]", "not mapped")),
    ],
)
def test_bad_training_input_fails_cleanly_and_writes_nothing(tmp_path, cfd_subset, damage, fragments):
    extra = {"train": {"lr": "fast"}} if damage == "bad_key" else {}
    params = write_params(tmp_path / "params.yaml", cfd_subset / "images", cfd_subset / "masks", **extra)
    if damage == "drop_mask":
        (cfd_subset / "masks" / "001.png").unlink()
    if damage == "unknown_value":
        params.write_text(
            params.read_text().replace(
                "data:", "data:\n  classes: [{name: bg, values: [0]}, {name: crack, values: [254]}]", 1
            )
        )
    result = run("train", "--params", str(params))
    assert_one_line_error(result, *fragments)
    assert not list(tmp_path.glob("*.safetensors*")) and not list(tmp_path.glob(".*partial*"))


def test_evaluate_with_missing_model_or_empty_folder(tmp_path, cfd_subset):
    result = run(
        "evaluate",
        "--model",
        str(tmp_path / "none.safetensors"),
        "--images",
        str(cfd_subset / "images"),
        "--masks",
        str(cfd_subset / "masks"),
        "--out",
        str(tmp_path / "m.json"),
    )
    assert_one_line_error(result, "model file not found")
    assert not (tmp_path / "m.json").exists()


def test_doctor_reports_versions():
    from pipeline.inference.device import cpu_has_native_bf16

    result = run("doctor")
    import pyogrio
    import rasterio

    assert result.returncode == 0 and "torch" in result.stdout
    assert f"rasterio / GDAL: {rasterio.__version__} / {rasterio.__gdal_version__} (rasters)" in result.stdout
    assert f"pyogrio / GDAL: {pyogrio.__version__} / {pyogrio.__gdal_version_string__} (vector" in result.stdout
    expected = "cpu bf16: native (survey.precision: bf16" if cpu_has_native_bf16() else "cpu bf16: not native"
    assert expected in result.stdout


def test_survey_from_any_folder_uses_the_shipped_model_and_leaves_only_its_output(tmp_path, crack_mosaic):
    import os

    import rasterio

    work, home = tmp_path / "my surveys", tmp_path / "msaf-home"
    work.mkdir()
    with rasterio.open(crack_mosaic[0]) as src:
        profile = src.profile | {"width": 256, "height": 256, "transform": src.window_transform(((0, 256), (0, 256)))}
        pixels = src.read(window=((0, 256), (0, 256)))
    with rasterio.open(work / "my ortho.tif", "w", **profile) as dst:
        dst.write(pixels)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MSAF_PROJECT_DIR", "MSAF_PARAMS")}
    result = subprocess.run(
        [
            *MSAF,
            "survey",
            "my ortho.tif",
            "--out",
            "out",
            "--device",
            "cpu",
            "--exposure-floor",
            "150",
            "--meta",
            "structure_id=BR-7",
            "--meta",
            "flight_date=2026-06-14",
        ],
        cwd=work,
        env=env | {"MSAF_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in work.iterdir()) == ["my ortho.tif", "out"]  # no mlflow.db, no caches here
    assert {"mask.tif", "confidence.tif", "survey.json", "report.html", "defects.gpkg"} <= {
        p.name for p in (work / "out").iterdir()
    }
    record = json.loads((work / "out" / "survey.json").read_text())
    assert record["model"]["registry"].startswith("models:/msaf-defects@champion")
    assert record["model"]["classes"] == ["background", "crack", "joint"]
    assert record["job"] == {"structure_id": "BR-7", "flight_date": "2026-06-14"}
    assert record["precision"] == "fp32"  # auto on a CPU
    assert record["exposure_floor"] == 150.0  # the flag over the shipped model's own 170
    from pipeline.inference.device import cpu_has_native_bf16

    assert ("--precision bf16 surveys ~1.7x faster" in result.stdout) == cpu_has_native_bf16()
    assert "BR-7" in (work / "out" / "report.html").read_text()
    assert (home / "mlflow.db").is_file() and (home / "mlartifacts").is_dir()
    doctor = subprocess.run(
        [*MSAF, "doctor"], cwd=work, env=env | {"MSAF_HOME": str(home)}, capture_output=True, text=True, timeout=120
    )
    assert doctor.returncode == 0 and "built-in defaults" in doctor.stdout and str(home) in doctor.stdout


def test_make_setup_passes_a_cuda_torch_line_as_separate_pip_arguments():
    import shlex

    repo = Path(__file__).resolve().parents[1]
    url = "https://download.pytorch.org/whl/cu126"
    dry = subprocess.run(
        ["make", "-n", "-B", "setup", f"TORCH=torch==2.13.0 --index-url {url}"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    torch_lines = [shlex.split(line) for line in dry.stdout.splitlines() if "pip install" in line and "torch==" in line]
    assert torch_lines and torch_lines[0][-3:] == ["torch==2.13.0", "--index-url", url]
    assert any("uninstall" in line and "torch" in line for line in dry.stdout.splitlines())  # a new spec reinstalls
