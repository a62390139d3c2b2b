"""Retraining flow: run the DVC pipeline (prepare -> train -> evaluate -> register), report the decision."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

import flows  # noqa: F401  (telemetry defaults)
from pipeline.metrics.summary import read_evaluation
from pipeline.tracking.registry import Decision


@task(name="dvc repro", retries=1, retry_delay_seconds=30)
def dvc_repro(project: str) -> str:
    """Run `dvc repro` in the project with this environment's tools on PATH; its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc repro failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


@flow(name="msaf-retrain", log_prints=True)
def retrain_flow(project: str = ".") -> dict[str, Any]:
    """Reproduce the model from the DVC-tracked data and params; returns the registry decision."""
    logger = get_run_logger()
    output = dvc_repro(project)
    logger.info(output[-1500:])
    decision = Decision.read(Path(project) / "metrics" / "registry.json")
    evaluation = read_evaluation(Path(project) / "metrics" / "eval.json")
    verdict = "promoted to champion" if decision.promoted else "registered, not promoted"
    create_markdown_artifact(
        key="registry-decision",
        markdown=f"# Retraining\n\n{decision.name} version {decision.version}: **{verdict}**\n\n"
        f"- validation tolerant F1: {decision.score:.4f}\n"
        f"- champion before: {decision.champion_version} ({decision.champion_score})\n"
        f"- validation IoU (foreground): {evaluation.fg_iou:.4f}\n",
    )
    return decision.as_dict()
