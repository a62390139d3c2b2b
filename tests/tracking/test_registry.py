"""MLflow tracking and registry on a real SQLite store in a temporary project."""

import shutil
import sqlite3

import pytest

from pipeline.errors import MsafError
from pipeline.tracking import registry
from pipeline.tracking.runs import log_model, log_survey
from pipeline.tracking.store import ARTIFACT_DIR, experiment_id, init_tracking, project_root


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project folder as the working directory, with its own mlflow.db."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MSAF_PROJECT_DIR", raising=False)
    (tmp_path / "params.yaml").write_text("{}\n")  # params.yaml + dvc.yaml: an msaf project folder
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    init_tracking()
    return tmp_path


def _candidate(tiny_model, score: float) -> str:
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id("training")) as run:
        uri = log_model(tiny_model)
    decision = registry.register_candidate(uri, score, "msaf-defects", "champion", run.info.run_id)
    return decision


def test_store_lives_in_the_project_with_relative_artifacts(project, tiny_model):
    _candidate(tiny_model, 0.5)
    assert (project / "mlflow.db").is_file()
    assert list((project / ARTIFACT_DIR / "training").rglob("*.safetensors"))
    assert project_root() == project.resolve()


def test_promotion_gate_keeps_a_worse_model_out(project, tiny_model):
    first = _candidate(tiny_model, 0.50)
    worse = _candidate(tiny_model, 0.40)
    equal = _candidate(tiny_model, 0.50)
    assert first.promoted and first.champion_version is None
    assert not worse.promoted and worse.champion_version == "1" and worse.champion_score == 0.5
    assert equal.promoted  # ties promote: the newer model at equal score
    rows = {r["version"]: r for r in registry.list_versions("msaf-defects")}
    assert rows["3"]["aliases"] == "champion" and rows["2"]["aliases"] == "" and len(rows) == 3
    assert registry.show("msaf-defects", "champion")["version"] == "3"
    registry.promote("msaf-defects", "2", "champion")
    assert registry.show("msaf-defects", "champion")["version"] == "2"


def test_champion_checkpoint_is_the_registered_file(project, tiny_model):
    _candidate(tiny_model, 0.5)
    path = registry.checkpoint_for("msaf-defects", "champion")
    assert path.read_bytes() == tiny_model.read_bytes()
    assert path.is_relative_to(project)


def test_unknown_alias_or_version_is_a_clear_error(project, tiny_model):
    _candidate(tiny_model, 0.5)
    with pytest.raises(MsafError, match="has no alias 'production'"):
        registry.show("msaf-defects", "production")
    with pytest.raises(MsafError, match="has no version '9'"):
        registry.show("msaf-defects", "9")


def test_shipped_model_becomes_the_first_champion(project, tiny_model):
    from pipeline.locations import shipped_model

    path, ref = registry.resolve_default_model("msaf-defects", "champion")  # the package's own model
    assert ref == "models:/msaf-defects@champion (v1)" and path.read_bytes() == shipped_model().read_bytes()
    _, ref_again = registry.resolve_default_model("msaf-defects", "champion")
    assert ref_again == ref and len(registry.list_versions("msaf-defects")) == 1  # registered once


def test_registering_the_first_champion_prints_nothing(project):
    """A user's first survey registers the shipped model: MLflow's "Successfully registered model",
    "Created version" and its type-hint warning used to land on the survey's stderr."""
    import subprocess
    import sys

    code = (
        "from pipeline.tracking import registry, store; store.init_tracking(); "
        "registry.resolve_default_model('msaf-defects', 'champion')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr


def test_no_champion_and_no_shipped_model(project):
    with pytest.raises(MsafError, match="no model"):
        registry.resolve_default_model("msaf-defects", "champion", shipped=project / "missing.safetensors")


def test_moved_project_keeps_working(project, tiny_model, tmp_path_factory, monkeypatch):
    _candidate(tiny_model, 0.5)
    moved = tmp_path_factory.mktemp("moved") / "project"
    shutil.copytree(project, moved)
    shutil.rmtree(project / ARTIFACT_DIR)  # the old location is gone
    monkeypatch.chdir(moved)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow exports the old project's URI
    init_tracking()
    with sqlite3.connect(moved / "mlflow.db") as con:
        (location,) = con.execute("SELECT artifact_location FROM experiments WHERE name='training'").fetchone()
    assert str(moved) in location
    assert registry.checkpoint_for("msaf-defects", "champion").read_bytes() == tiny_model.read_bytes()


def test_survey_run_is_logged_with_artifacts(project, surveyed):
    import mlflow

    from pipeline.survey_record import read_survey_record

    record = read_survey_record(surveyed)
    assert record is not None
    from pipeline.report.result import ReportResult

    condition = {"CS1": 0.3, "CS1-CS2": 0.01, "CS2": 0.02, "CS3": 0.0}
    report = ReportResult(
        defects=7,
        by_class={"crack": 7},
        non_defects={},
        cracks_by_type={"transverse": 4, "map": 1},
        condition_m2=condition,
        outputs={},
    )
    run_id = log_survey(record, surveyed, report)
    run = mlflow.get_run(run_id)
    assert run.data.metrics["defects"] == 7 and run.data.metrics["mpix_per_s"] > 0
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("condition_m2.")} == {
        f"condition_m2.{state}": area for state, area in condition.items()
    }
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("cracks.")} == {
        "cracks.transverse": 4,
        "cracks.map": 1,
    }
    assert run.data.params["model.sha256"] == record.model.sha256
    assert run.data.params["scales"] == "1"  # the views, and the thresholds the mask was decided by
    assert {k: float(v) for k, v in run.data.params.items() if k.startswith("threshold.")} == {
        f"threshold.{name}": t for name, t in (record.thresholds or {}).items()
    }
    assert float(run.data.params["exposure_floor"]) == record.exposure_floor
    assert not any(k.startswith("unrated_m2.") for k in run.data.metrics)  # lit: every cell can show a crack
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert "survey.json" in artifacts
    assert mlflow.get_experiment(run.info.experiment_id).name == "surveys"
    assert "aoi" not in run.data.params  # the whole raster
    from pipeline.survey_record import AreaRecord

    area = AreaRecord(path="deck.gpkg", fingerprint="f" * 64, area_m2=12.5, raster_share=0.4)
    cut = mlflow.get_run(log_survey(record.model_copy(update={"area_of_interest": area}), surveyed, report))
    assert (cut.data.params["aoi"], cut.data.params["aoi.fingerprint"]) == ("deck.gpkg", "f" * 64)


def test_cli_unknown_alias_is_one_line(project, tiny_model):
    import subprocess
    import sys
    from pathlib import Path

    _candidate(tiny_model, 0.5)
    msaf = str(Path(sys.executable).with_name("msaf"))
    result = subprocess.run(
        [msaf, "models", "show", "production"], capture_output=True, text=True, timeout=120, cwd=project
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no alias 'production'" in lines[0]
    listed = subprocess.run([msaf, "models", "list"], capture_output=True, text=True, timeout=120, cwd=project)
    assert listed.returncode == 0 and "champion" in listed.stdout


def test_training_run_logs_params_metrics_tags_and_a_loadable_model(project, cfd_subset):
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    from pipeline.config import load_params
    from pipeline.data import read_image
    from pipeline.tracking.runs import tracked_training
    from pipeline.training.trainer import train_model
    from tests.conftest import write_params

    params = load_params(
        write_params(project / "params.yaml", cfd_subset / "images", cfd_subset / "masks", train={"epochs": 2})
    )
    result, run_id, model_uri = tracked_training(
        params.model_dump(mode="json"), lambda on_epoch: train_model(params, on_epoch=on_epoch)
    )
    run = mlflow.get_run(run_id)
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.preset"] == "dsnet-tiny"
    history = MlflowClient().get_metric_history(run_id, "val_fg_tol_f1")
    assert [m.step for m in history] == [1, 2]
    assert run.data.tags["data.fingerprint"] == result.metadata.data_fingerprint
    assert run.data.tags["weights_sha256"] == result.metadata.weights_sha256 and "git_commit" in run.data.tags
    assert any(key.startswith("system/") for key in run.data.metrics) or "best_val_fg_tol_f1" in run.data.metrics
    image = read_image(sorted((cfd_subset / "images").glob("*.jpg"))[0])
    prediction = mlflow.pyfunc.load_model(model_uri).predict(image)
    assert prediction.shape == image.shape[:2] and set(np.unique(prediction)) <= {0, 1}
