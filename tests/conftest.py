"""Shared fixtures: real files on disk (CFD photos, generated image/mask folders), never mocks."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


# Fixtures that train a model, compose a survey raster or start a service: a test using one is not
# part of the fast tier (`make test-fast` = `pytest -m "not slow"`), whatever its own marks say.
HEAVY_FIXTURES = {"tiny_model", "crack_mosaic", "surveyed", "prefect_harness"}


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs one worker per core), each worker and the processes it
    starts compute on one thread: two workers with a thread pool each per core would oversubscribe
    the CPU and spin-wait instead of computing."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# The longest modules (seconds on 2 cores, measured with --junitxml), run first: `make test` hands
# whole modules to the workers in this order (--no-loadscope-reorder), so no long module starts last
# while the other worker idles; the rest keep their order.
LONGEST_MODULES = (  # seconds on 2 cores, two workers (a fresh clone, 2026-12-05)
    "tests/flows/test_flows.py",  # 197 s
    "tests/test_dvc_pipeline.py",  # 194
    "tests/test_one_line_errors.py",  # 115
    "tests/test_gpu_check.py",  # 87
    "tests/test_survey.py",  # 86
    "tests/training/test_learning.py",  # 78
    "tests/report/test_change_tracking.py",  # 64
    "tests/report/test_registration.py",  # 54
    "tests/test_cli.py",  # 45
    "tests/test_benches.py",  # 45
    "tests/report/test_outputs.py",  # 41
    "tests/inference/test_exposure_lift.py",  # 34
    "tests/raster/test_collar.py",  # ~30 (the shipped model twice, a real `msaf` process; 2026-12-06)
    "tests/test_survey_folder.py",  # 30
    "tests/tracking/test_registry.py",  # 29
)


def pytest_collection_modifyitems(config, items):
    """Mark tests that need a heavy fixture as slow, so the fast tier leaves them out; the longest
    modules first (a stable sort: every module's tests keep their order)."""
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {module: i for i, module in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(scope="session", autouse=True)
def isolated_services(tmp_path_factory):
    """Tests never touch the project's mlflow.db or the user's Prefect home; telemetry stays off.

    Environment variables reach the `msaf` subprocesses the tests start, too.
    """
    import os

    root = tmp_path_factory.mktemp("services")
    saved = {
        k: os.environ.get(k)
        for k in (
            "MLFLOW_TRACKING_URI",
            "PREFECT_HOME",
            "PREFECT_SERVER_ANALYTICS_ENABLED",
            "DO_NOT_TRACK",
            "MLFLOW_DISABLE_TELEMETRY",
            "MSAF_HOME",
        )
    }
    os.environ.update(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "PREFECT_HOME": str(root / "prefect"),
            "MSAF_HOME": str(root / "msaf-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


SOURCES = REPO / "data" / "sources"
CFD = SOURCES / "crackforest"
UAV75 = SOURCES / "uav75"
MASONRY = SOURCES / "masonry"


@pytest.fixture(scope="session")
def prefect_harness(isolated_services):
    """A session-scoped Prefect test harness: in-process flows run against a temporary API server."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def cfd_dir() -> Path:
    """The real CrackForest photos that travel with the project (data/sources)."""
    assert (CFD / "images").is_dir(), f"crack data missing at {CFD}"
    return CFD


@pytest.fixture(scope="session")
def uav_dir() -> Path:
    """The real UAV75 drone photos of concrete (cracks 255, planking joints 204; GPL-3.0)."""
    assert (UAV75 / "images").is_dir(), f"UAV75 data missing at {UAV75}"
    return UAV75


@pytest.fixture(scope="session")
def masonry_dir() -> Path:
    """The real masonry wall patches (cracks 255, mortar joints unlabelled; GPL-3.0)."""
    assert (MASONRY / "images").is_dir(), f"masonry data missing at {MASONRY}"
    return MASONRY


def copy_pairs(source: Path, out: Path, stems: list[str]) -> Path:
    """Copy image/mask pairs by stem (jpg images, png masks) into out/images and out/masks."""
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        shutil.copy(source / "images" / f"{stem}.jpg", out / "images" / f"{stem}.jpg")
        shutil.copy(source / "masks" / f"{stem}.png", out / "masks" / f"{stem}.png")
    return out


def write_two_set_params(tmp_path: Path, cfd_dir: Path, uav_dir: Path, **train):
    """Params for a dsnet-tiny run on 6 CFD photos and 8 UAV75 crops (5 photos, split photo-wise)."""
    import yaml

    from pipeline.config import load_params

    cfd = copy_pairs(cfd_dir, tmp_path / "cfd", [p.stem for p in sorted((cfd_dir / "images").glob("*.jpg"))[:6]])
    uav_stems = ["DSC00552", "DSC00552b", "DSC00560", "DSC00560b", "DSC00560c", "DSC00566", "DSC00570", "DSC00605"]
    uav = copy_pairs(uav_dir, tmp_path / "uav", uav_stems)
    params = {
        "data": {
            "classes": [
                {"name": "background", "values": [0]},
                {"name": "crack", "values": [255]},
                {"name": "joint", "values": [204]},
            ],
            "sets": [
                {
                    "name": "cfd",
                    "images": str(cfd / "images"),
                    "masks": str(cfd / "masks"),
                    "values": {0: "background", 255: "crack"},
                    "weight": 0.25,
                },
                {
                    "name": "uav",
                    "images": str(uav / "images"),
                    "masks": str(uav / "masks"),
                    "values": {0: "background", 204: "joint", 255: "crack"},
                    "split": "by_photo",
                    "photo_pattern": r"^(.+?)[a-z]?$",
                    "weight": 0.75,
                    "val_fraction": 0.4,
                },
            ],
            "val_fraction": 0.34,
        },
        "model": {"preset": "dsnet-tiny"},
        "train": {
            "out": str(tmp_path / "model.safetensors"),
            "epochs": 1,
            "steps_per_epoch": 2,
            "batch_size": 2,
            "crop_size": 64,
            "device": "cpu",
            **train,
        },
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return load_params(path)


@pytest.fixture
def cfd_subset(tmp_path: Path, cfd_dir: Path) -> Path:
    """A copy of the first 10 real CFD image/mask pairs (tests may damage it)."""
    out = tmp_path / "cfd"
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True)
    for image in sorted((cfd_dir / "images").glob("*.jpg"))[:10]:
        shutil.copy(image, out / "images" / image.name)
        shutil.copy(cfd_dir / "masks" / f"{image.stem}.png", out / "masks" / f"{image.stem}.png")
    return out


def write_pair(root: Path, stem: str, image: np.ndarray, mask: np.ndarray) -> None:
    """Write an RGB PNG image and an 8-bit PNG mask under root/images and root/masks."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


def write_params(path: Path, images: Path, masks: Path, **sections: dict) -> Path:
    """A params.yaml for a quick dsnet-tiny run on the given folders."""
    import yaml

    params = {
        "data": {"images": str(images), "masks": str(masks), "val_fraction": 0.3},
        "model": {"preset": "dsnet-tiny"},
        "train": {
            "out": str(path.parent / "model.safetensors"),
            "epochs": 1,
            "steps_per_epoch": 2,
            "batch_size": 2,
            "crop_size": 64,
            "device": "cpu",
        },
    }
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(params))
    return path


def built_once(tmp_path_factory, name: str, build: Callable[[Path], list[Path]]) -> list[Path]:
    """A session artefact built once for the whole run: under pytest-xdist the first worker builds it
    in the run's shared temporary folder (under a lock) and the others wait and reuse it, instead of
    each worker training the same tiny model again. Tests never modify these artefacts."""
    import fcntl
    import json
    import os

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent / name
    shared.mkdir(exist_ok=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = shared / ".built.json"
        if done.is_file():
            return [Path(p) for p in json.loads(done.read_text())]
        paths = build(shared)
        done.write_text(json.dumps([str(p) for p in paths]))
        return paths


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, cfd_dir) -> Path:
    """A dsnet-tiny checkpoint briefly trained on the real CFD photos (128 px tiles), shared by the session.

    Trained for real, so its masks have real structure (cracks and background), which makes
    byte-identity checks meaningful.
    """
    from pipeline.config import load_params
    from pipeline.training.trainer import train_model

    def train(root: Path) -> list[Path]:
        params = write_params(
            root / "params.yaml",
            cfd_dir / "images",
            cfd_dir / "masks",
            data={"val_fraction": 0.1},
            train={"epochs": 4, "steps_per_epoch": 20, "batch_size": 8, "crop_size": 128},
        )
        return [train_model(load_params(params)).checkpoint]

    return built_once(tmp_path_factory, "tiny_model", train)[0]


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32633",
    transform=None,
    nodata: float | None = None,
    tags: dict[str, str] | None = None,
    **profile,
) -> Path:
    """Write a (bands, H, W) array as a GeoTIFF with a CRS (unless crs=None) and dataset ``tags``."""
    import rasterio
    from rasterio.transform import from_origin

    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype,
        crs=crs,
        transform=transform or from_origin(500000, 5000000, 0.001, 0.001),
        nodata=nodata,
        **profile,
    ) as dst:
        dst.write(data)
        dst.update_tags(**(tags or {}))
    return path


@pytest.fixture(scope="session")
def crack_mosaic(tmp_path_factory, cfd_dir) -> tuple[Path, Path]:
    """A 700x530 JPEG-tiled crack orthomosaic (sizes not multiples of any tile) with its truth."""
    from pipeline.config import DataConfig
    from pipeline.data.mosaic import compose_mosaic

    def compose(root: Path) -> list[Path]:
        ortho, truth = root / "ortho.tif", root / "truth.tif"
        compose_mosaic(
            cfd_dir / "images",
            cfd_dir / "masks",
            ortho,
            truth,
            700,
            530,
            0.001,
            "EPSG:32633",
            DataConfig().classes,
            compress="jpeg",
            footprint=True,
            seed=3,
        )
        return [ortho, truth]

    ortho, truth = built_once(tmp_path_factory, "mosaic", compose)
    return ortho, truth


@pytest.fixture(scope="session")
def surveyed(tmp_path_factory, tiny_model, crack_mosaic) -> Path:
    """A finished survey folder (mask, confidence, survey.json) of the crack mosaic."""
    from pipeline.config import SurveyConfig
    from pipeline.survey import run_survey

    out = tmp_path_factory.mktemp("survey")
    run_survey(crack_mosaic[0], out, SurveyConfig(device="cpu", gsd_policy="ignore"), model_path=tiny_model)
    return out


def run_msaf(*args: str, timeout: float = 300, **kwargs):
    """The `msaf` console script as a user runs it: a real process, output captured."""
    import subprocess
    import sys

    msaf = str(Path(sys.executable).with_name("msaf"))
    return subprocess.run([msaf, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def msaf_in_process(*args: str):
    """`msaf ARGS` in this process (typer's runner, stdout and stderr captured apart), for the many
    checks of one code path that need no Python of their own: a result like ``run_msaf``'s. An
    exception the command let through is raised here (a real process would print its traceback)."""
    import subprocess

    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["msaf", *args], result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit 2 with exactly one line on stderr, starting "error:", no traceback, naming each fragment."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr


def cpu_survey(ortho: object, out: object, model: object, *flags: str) -> list[str]:
    """`survey ORTHO --out OUT --model MODEL --device cpu FLAGS`: the arguments of the survey the
    process-level tests run (`msaf` or `python -c ...` put in front by the caller)."""
    return ["survey", str(ortho), "--out", str(out), "--model", str(model), "--device", "cpu", *flags]


def write_mask_survey(
    folder: Path,
    mask: np.ndarray,
    crs: str = "EPSG:32633",
    shift_px: float = 0,
    classes: tuple[str, ...] = ("background", "crack", "spall"),
) -> Path:
    """A survey folder holding only mask.tif (1 mm pixels, class names in its tags): what report and
    compare read from a survey; ``shift_px`` moves the grid east (a registration offset)."""
    import json

    from rasterio.transform import from_origin

    folder.mkdir(parents=True)
    write_raster(
        folder / "mask.tif",
        np.asarray(mask, np.uint8)[None],
        crs=crs,
        transform=from_origin(400000 + shift_px * 0.001, 5000000, 0.001, 0.001),
        nodata=255,
        tags={"MSAF_CLASSES": json.dumps(list(classes))},
    )
    return folder
