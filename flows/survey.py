"""The survey flow: validate -> plan blocks -> infer blocks (fan-out) -> stitch COG -> report -> MLflow.

Tasks receive paths, settings and block indices, never arrays; each inference task handles a
chunk of blocks and loads the model once per worker process. Finished blocks are kept in an atomic
block store, so a rerun after a crash re-does only the missing blocks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

import flows  # noqa: F401  (telemetry defaults)
from flows.engines import gpu_count, task_runner
from flows.server import prefect_api
from pipeline.config import Params, load_params_or_defaults
from pipeline.errors import MsafError
from pipeline.report.result import ReportResult
from pipeline.survey import PreparedSurvey, infer_blocks, prepare_survey, stitch
from pipeline.survey_folder import exclusive
from pipeline.survey_record import SurveyRecord


@task(name="resolve model")
def resolve_model(params: Params) -> tuple[str, str]:
    """The registry champion (the shipped model becomes the first one); the store is initialised
    here, once, before any fan-out (concurrent first-time migrations of SQLite fail)."""
    from pipeline.tracking.registry import resolve_default_model
    from pipeline.tracking.store import init_tracking

    init_tracking()
    path, ref = resolve_default_model(params.registry.name, params.registry.alias)
    return str(path), ref


@task(name="validate")
def validate(
    ortho: str,
    out: str,
    params: Params,
    model: str | None,
    model_ref: str | None,
    assume_crs: str | None,
    job: dict[str, str] | None = None,
) -> PreparedSurvey:
    return prepare_survey(
        ortho, out, params.survey, model_path=model, model_ref=model_ref, assume_crs=assume_crs, job=job
    )


@task(name="plan blocks")
def plan_chunks(prepared: PreparedSurvey, chunk_blocks: int) -> list[list[int]]:
    """Chunks of the blocks still to infer (finished ones, from a killed run, are skipped)."""
    todo = sorted(set(range(prepared.n_blocks)) - prepared.store.done())
    return [todo[i : i + chunk_blocks] for i in range(0, len(todo), chunk_blocks)]


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry real faults (a lost worker, I/O hiccups), not user errors that would fail again."""
    try:
        state.result()
    except MsafError:
        return False
    except Exception:
        return True
    return False


@task(
    name="infer blocks",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=_transient,
)
def infer_chunk(prepared: PreparedSurvey, indices: list[int]) -> dict[str, int]:
    return infer_blocks(prepared, indices)


class SurveyOutcome(BaseModel):
    """What a survey flow returns: the record it wrote to survey.json, the report's summary (None
    without a report) and the MLflow run (None untracked)."""

    record: SurveyRecord
    report: ReportResult | None = None
    mlflow_run: str | None = None


@task(name="stitch COG")
def stitch_task(prepared: PreparedSurvey, infer_s: float, reused: int, started: float) -> SurveyRecord:
    return stitch(prepared, infer_s=infer_s, reused=reused, started=started)


@task(name="report")
def report_task(out: str, params: Params) -> ReportResult:
    from pipeline.report.build import report_survey

    return report_survey(out, params.report)


@task(name="log to MLflow")
def log_task(record: SurveyRecord, out: str, summary: ReportResult | None) -> str:
    from pipeline.tracking.runs import log_survey
    from pipeline.tracking.store import init_tracking

    init_tracking()
    return log_survey(record, Path(out), summary)


def _summary_artifacts(record: SurveyRecord, summary: ReportResult | None, out: str) -> None:
    rows: list[dict[str, Any]] = [{"class": name, "pixels": count} for name, count in record.class_pixels.items()]
    if summary:
        rows = [r | {"defects": summary.by_class.get(r["class"], 0)} for r in rows]
    create_table_artifact(table=rows, key="defect-summary", description="defects and pixels per class")
    links = "\n".join(
        f"- `{Path(out) / name}`"
        for name in ("mask.tif", "confidence.tif", "survey.json", *(summary.outputs.values() if summary else ()))
    )
    create_markdown_artifact(
        key="survey-outputs",
        markdown=f"# Survey of `{record.input.path}`\n\n{record.input.width} x {record.input.height}"
        f" px, {record.throughput_mpix_s.end_to_end} Mpix/s end to end.\n\n{links}\n\n"
        "Open `defects.gpkg` in QGIS, `report.html` in a browser.",
        description="where the outputs are",
    )


@flow(name="msaf-survey", log_prints=True)
def survey_flow(
    ortho: str,
    out: str,
    model: str | None = None,
    model_ref: str | None = None,
    params_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    assume_crs: str | None = None,
    chunk_blocks: int = 4,
    report: bool = True,
    track: bool = True,
    prepared: Any = None,
    job: dict[str, str] | None = None,
) -> SurveyOutcome:
    """Process one orthomosaic; returns its record, report summary and MLflow run. ``job``: the owner's job details.

    ``prepared`` (a ``PreparedSurvey``) lets a caller that already validated the input (the CLI, to
    report mistakes as one line before any orchestration starts) skip the validate task. It is typed
    ``Any`` because deployments rebuild the parameter model where that class cannot be resolved.
    """
    with exclusive(out):  # re-entrant: the CLI already holds it
        return _survey(
            ortho, out, model, model_ref, params_path, overrides, assume_crs, chunk_blocks, report, track, prepared, job
        )


def _survey(
    ortho: str,
    out: str,
    model: str | None,
    model_ref: str | None,
    params_path: str | None,
    overrides: dict[str, Any] | None,
    assume_crs: str | None,
    chunk_blocks: int,
    report: bool,
    track: bool,
    prepared: Any,
    job: dict[str, str] | None = None,
) -> SurveyOutcome:
    logger = get_run_logger()
    params = load_params_or_defaults(params_path, overrides)
    started = time.perf_counter()
    if prepared is None:
        if model is None:
            model, model_ref = resolve_model(params)
            logger.info("model: %s", model_ref)
        prepared = validate(ortho, out, params, model, model_ref, assume_crs, job)
    if track:
        from pipeline.tracking.store import init_tracking

        init_tracking()  # once, before any fan-out
    chunks = plan_chunks(prepared, chunk_blocks)
    total = prepared.n_blocks
    reused = total - sum(len(c) for c in chunks)
    logger.info("%d blocks in %d chunks (%d already done)", total, len(chunks), reused)
    progress = cast(
        UUID,
        create_progress_artifact(  # the synchronous form: this flow is synchronous
            progress=100.0 * reused / max(total, 1), key="survey-progress", description=f"blocks of {Path(ortho).name}"
        ),
    )
    infer_started = time.perf_counter()
    futures = [_submit_gpu_task(infer_chunk, prepared, chunk) for chunk in chunks]
    done = reused
    for future in as_completed(futures):
        done += future.result()["computed"] + future.result()["reused"]
        update_progress_artifact(progress, progress=100.0 * done / max(total, 1))
    infer_s = time.perf_counter() - infer_started
    record = stitch_task(prepared, infer_s, reused, started)  # runs in this process: same clock
    summary = report_task(out, params) if report else None
    mlflow_run = log_task(record, out, summary) if track else None
    _summary_artifacts(record, summary, out)
    logger.info("wrote %s (%s)", out, ", ".join(f"{k} {v}" for k, v in record.class_pixels.items()))
    return SurveyOutcome(record=record, report=summary, mlflow_run=mlflow_run)


def _submit_gpu_task(task_fn: Any, *args: Any) -> Any:
    """Submit; on a GPU Dask cluster, with resources {"GPU": 1} so a worker never runs two at once."""
    if gpu_count():
        try:
            import dask

            with dask.annotate(resources={"GPU": 1}):
                return task_fn.submit(*args)
        except ImportError:
            pass
    return task_fn.submit(*args)


def run_survey_flow(
    ortho: str,
    out: str,
    *,
    engine: str = "local",
    dask_address: str | None = None,
    dask_workers: int | None = None,
    **kwargs: Any,
) -> SurveyOutcome:
    """Run the flow with the task runner of an engine (what `msaf survey` calls)."""
    if engine == "dask":
        kwargs.setdefault("chunk_blocks", 1)
    with prefect_api():  # one API for the flow and its Dask workers; it dies with this process
        runner = task_runner(engine, dask_address, dask_workers)
        return survey_flow.with_options(task_runner=runner)(ortho=str(ortho), out=str(out), **kwargs)


__all__ = ["SurveyOutcome", "run_survey_flow", "survey_flow"]
