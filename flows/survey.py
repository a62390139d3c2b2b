"""The survey flow: a thin Prefect runner of the survey plan (``pipeline.survey_plan``).

Each step of the plan runs as a task; the block chunks fan out over the flow's task runner (a
thread, or a Dask cluster: one worker per GPU). Tasks receive paths, settings and block indices,
never arrays; each inference task loads the model once per worker process. Finished blocks are kept
in an atomic block store, so a rerun after a crash re-does only the missing blocks.
"""

# No `from __future__ import annotations` here: a served deployment rebuilds the flows' parameter
# models from these annotations, and string annotations cannot be resolved there.
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.tasks import exponential_backoff

import flows  # noqa: F401  (telemetry defaults)
from flows.engines import gpu_count, task_runner
from flows.server import prefect_api
from pipeline.errors import MsafError
from pipeline.report.result import ReportResult
from pipeline.stop import Stopped, clear_stop
from pipeline.survey import PreparedSurvey
from pipeline.survey_folder import SurveyFolder, exclusive
from pipeline.survey_plan import INFER_BLOCKS, STEPS, STITCH, Step, SurveyOutcome, SurveyRequest, prepare, run_plan
from pipeline.survey_record import SurveyRecord

R = TypeVar("R")


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry real faults (a lost worker, I/O hiccups), not user errors that would fail again, nor a
    survey stopped on request."""
    try:
        state.result()
    except (MsafError, Stopped):
        return False
    except Exception:
        return True
    return False


def _as_task(step: Step[Any]) -> Any:
    if step is INFER_BLOCKS:
        return task(
            name=step.name,
            retries=2,
            retry_delay_seconds=exponential_backoff(backoff_factor=2),
            retry_condition_fn=_transient,
        )(step.run)
    if step is STITCH:  # its argument is the live Stitcher (open files, threads): nothing to hash or cache
        return task(name=step.name, cache_policy=NO_CACHE)(step.run)
    return task(name=step.name)(step.run)


TASKS = {step.name: _as_task(step) for step in STEPS}


class PrefectRunner:
    """The plan's steps as Prefect tasks: serial steps run in the flow's process, the block chunks
    are submitted to its task runner; progress is a Prefect progress artifact."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.artifact: UUID | None = None

    def call(self, step: Step[R], *args: Any) -> R:
        """Run the step's task in the flow's process."""
        return cast(R, TASKS[step.name](*args))

    def fan_out(self, step: Step[R], calls: Sequence[tuple[Any, ...]]) -> Iterator[R]:
        """Submit one task per call to the task runner; results as they finish."""
        futures = [_submit_gpu_task(TASKS[step.name], *args) for args in calls]
        for future in as_completed(futures):
            yield cast(R, future.result())

    def progress(self, done: int, total: int) -> None:
        """The first call logs the block count and creates the progress artifact; later ones update it."""
        percent = 100.0 * done / max(total, 1)
        if self.artifact is None:
            get_run_logger().info("%d blocks (%d already done)", total, done)
            self.artifact = cast(  # the synchronous form: this flow is synchronous
                UUID,
                create_progress_artifact(
                    progress=percent, key="survey-progress", description=f"blocks of {self.label}"
                ),
            )
        else:
            update_progress_artifact(self.artifact, progress=percent)


def _summary_artifacts(record: SurveyRecord, summary: ReportResult | None, out: str) -> None:
    rows: list[dict[str, Any]] = [{"class": name, "pixels": count} for name, count in record.class_pixels.items()]
    if summary:
        rows = [r | {"defects": summary.by_class.get(r["class"], 0)} for r in rows]
    create_table_artifact(table=rows, key="defect-summary", description="defects and pixels per class")
    if summary and summary.condition_m2:
        create_table_artifact(
            table=[
                {"condition state": state, "area m²": round(area, 4)} for state, area in summary.condition_m2.items()
            ],
            key="condition-states",
            description="surveyed area per AASHTO condition state (cracking)",
        )
    links = "\n".join(
        f"- `{Path(out) / name}`"
        for name in (
            SurveyFolder.MASK,
            SurveyFolder.CONFIDENCE,
            SurveyFolder.RECORD,
            *(summary.outputs.values() if summary else ()),
        )
    )
    create_markdown_artifact(
        key="survey-outputs",
        markdown=f"# Survey of `{record.input.path}`\n\n{record.input.width} x {record.input.height}"
        f" px, {record.throughput_mpix_s.end_to_end} Mpix/s end to end.\n\n{links}\n\n"
        "Open `defects.gpkg` in QGIS, `report.html` in a browser.",
        description="where the outputs are",
    )


@flow(name="msaf-survey", log_prints=True)
def survey_flow(request: SurveyRequest, prepared: Any = None) -> SurveyOutcome:
    """Run the survey plan for one request; returns its record, report summary and MLflow run.

    ``prepared`` (a ``PreparedSurvey``) lets a caller that already validated the request (to report
    mistakes as one line before any orchestration starts) skip the validate task. It is typed
    ``Any`` because deployments rebuild the parameter model where that class cannot be resolved.
    """
    outcome = run_plan(request, PrefectRunner(Path(request.ortho).name), prepared)
    record = outcome.record
    _summary_artifacts(record, outcome.report, request.out)
    get_run_logger().info("wrote %s (%s)", request.out, ", ".join(f"{k} {v}" for k, v in record.class_pixels.items()))
    return outcome


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
    request: SurveyRequest,
    *,
    engine: str = "local",
    dask_address: str | None = None,
    dask_workers: int | None = None,
    watch: Callable[[PreparedSurvey], AbstractContextManager[Any]] | None = None,
) -> SurveyOutcome:
    """Validate the request here, then run the flow with the task runner of an engine (what
    `msaf survey` calls). Mistakes in the request are MsafErrors before Prefect starts; ``watch``
    (e.g. a progress bar) is entered around the flow with the validated survey."""
    if engine == "dask" and "chunk_blocks" not in request.model_fields_set:
        request = request.model_copy(update={"chunk_blocks": 1})
    clear_stop()
    with exclusive(request.out):  # one survey per folder; dropped by the kernel whatever ends this process
        prepared = prepare(request)
        with (watch or (lambda _: nullcontext()))(prepared), prefect_api():
            runner = task_runner(engine, dask_address, dask_workers)
            return survey_flow.with_options(task_runner=runner)(request=request, prepared=prepared)


__all__ = ["PrefectRunner", "SurveyOutcome", "SurveyRequest", "run_survey_flow", "survey_flow"]
