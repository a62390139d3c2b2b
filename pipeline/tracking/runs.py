"""Log training and survey runs to MLflow."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

import pipeline
from pipeline.inference.scales import scales_key
from pipeline.report.result import ReportResult
from pipeline.survey_folder import SurveyFolder
from pipeline.survey_record import SurveyRecord
from pipeline.tracking.store import experiment_id, project_root
from pipeline.training.history import EpochRecord

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; lists become JSON strings."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else value
    return flat


def git_commit() -> str | None:
    """The git commit of the working tree, or None outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=project_root(), timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def dvc_data_hashes(raw_dir: Path | None = None) -> dict[str, str]:
    """The md5 DVC recorded for each raw data set (``data/raw/<set>.dvc``), by set name."""
    raw_dir = raw_dir or project_root() / "data" / "raw"
    hashes = {}
    for dvc_file in sorted(raw_dir.glob("*.dvc")):
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [{}])
        if md5 := outs[0].get("md5"):
            hashes[dvc_file.stem] = md5
    return hashes


def log_model(checkpoint: Path, name: str = "model") -> str:
    """Log a checkpoint as a pyfunc model (code + safetensors artifact); returns the model URI."""
    import mlflow

    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=str(PYFUNC_CODE),
        artifacts={"checkpoint": str(checkpoint)},
        pip_requirements=[f"msaf-pipeline=={pipeline.__version__}"],
    )
    return info.model_uri


def tracked_training(
    params_tree: dict[str, Any],
    train: Callable[[Callable[[EpochRecord], None]], Any],
    *,
    run_name: str | None = None,
) -> tuple[Any, str, str]:
    """Run ``train(on_epoch)`` inside an MLflow run of the ``training`` experiment.

    Logs all params, per-epoch metrics, system metrics, data hashes and git commit, then the model.
    Returns (train result, run id, model URI).
    """
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id("training"), run_name=run_name, log_system_metrics=True) as run:
        mlflow.log_params(flatten(params_tree))
        data_tags = {f"data.dvc_md5.{name}": md5 for name, md5 in dvc_data_hashes().items()}
        mlflow.set_tags(
            {
                "git_commit": git_commit() or "unknown",
                **(data_tags or {"data.dvc_md5": "untracked"}),
                "msaf.version": pipeline.__version__,
            }
        )

        def on_epoch(record: EpochRecord) -> None:
            metrics = {k: v for k, v in record.flat().items() if k != "epoch" and v is not None}
            mlflow.log_metrics(metrics, step=record.epoch)

        result = train(on_epoch)
        meta = result.metadata
        mlflow.set_tags(
            {
                "data.fingerprint": meta.data_fingerprint or "",
                "weights_sha256": meta.weights_sha256,
                "checkpoint_sha256": result.sha256,
            }
        )
        mlflow.log_metrics({f"best_val_{k}": v for k, v in result.validation.to_json().items() if isinstance(v, float)})
        model_uri = log_model(result.checkpoint)
        return result, run.info.run_id, model_uri


def log_survey(record: SurveyRecord, survey_dir: Path, report: ReportResult | None = None) -> str:
    """One run in the ``surveys`` experiment: input, model, params, throughput, defects, artifacts."""
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id("surveys"), run_name=Path(record.input.path).name) as run:
        mlflow.log_params(
            {
                "input": record.input.path,
                "input.fingerprint": record.input.fingerprint,
                "model.sha256": record.model.sha256,
                "model.name": record.model.name,
                **{f"tiling.{k}": v for k, v in record.tiling.model_dump().items()},
                "device": record.device,
                "scales": scales_key(record.scales),
                **{f"threshold.{name}": t for name, t in (record.thresholds or {}).items()},
                **({"exposure_floor": record.exposure_floor} if record.exposure_floor is not None else {}),
                **(
                    {"aoi": record.area_of_interest.path, "aoi.fingerprint": record.area_of_interest.fingerprint}
                    if record.area_of_interest
                    else {}
                ),
                **({"footprint": record.input.footprint} if record.input.footprint else {}),
                **({f"collar.{k}": v for k, v in record.collar.model_dump().items()} if record.collar else {}),
            }
        )
        if record.model.registry:
            mlflow.set_tag("model.registry", record.model.registry)
        metrics = {
            "mpix_per_s": record.throughput_mpix_s.end_to_end,
            "peak_rss_mb": record.peak_rss_mb,
            **{f"seconds.{k}": v for k, v in record.timings.model_dump().items()},
            **{f"pixels.{k}": v for k, v in record.class_pixels.items()},
        }
        if report:
            metrics |= {"defects": report.defects, **{f"defects.{k}": v for k, v in report.by_class.items()}}
            metrics |= {f"condition_m2.{state}": area for state, area in report.condition_m2.items()}
            metrics |= {f"cracks.{kind}": count for kind, count in report.cracks_by_type.items()}
            metrics |= {f"unrated_m2.{verdict.replace(' ', '_')}": area for verdict, area in report.unrated_m2.items()}
            metrics |= {"blur_px": report.blur_px} if report.blur_px is not None else {}
        mlflow.log_metrics(metrics)
        for name in (SurveyFolder.RECORD, SurveyFolder.HTML, SurveyFolder.GEOJSON, SurveyFolder.CSV):
            if (survey_dir / name).is_file():
                mlflow.log_artifact(str(survey_dir / name))
        return run.info.run_id
