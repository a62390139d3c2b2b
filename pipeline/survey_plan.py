"""One survey, declared once: resolve model -> validate -> plan blocks -> infer blocks -> stitch ->
report -> track. The stitch follows the block store from the start, so the COGs are encoded while
the blocks are inferred; its step finishes them.

The sequence lives here and nowhere else. Who runs each step is a ``StepRunner``: ``LocalRunner``
calls the steps in this process (``pipeline.survey.run_survey``, the tests); the Prefect flow
(``flows/survey.py``) wraps each step in a task and fans the block chunks out over its task runner
(threads, or a Dask cluster). One typed ``SurveyRequest`` goes in, one ``SurveyOutcome`` comes out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import Params
from pipeline.report.result import ReportResult
from pipeline.stitch import Stitcher
from pipeline.survey import BlockCounts, PreparedSurvey, infer_blocks, prepare_survey
from pipeline.survey_folder import exclusive
from pipeline.survey_record import SurveyRecord

R = TypeVar("R")


class SurveyRequest(BaseModel):
    """Everything one survey needs, resolved by the caller: input, output folder, settings, model."""

    model_config = ConfigDict(frozen=True)

    ortho: str
    out: str
    params: Params = Field(default_factory=Params)
    model: str | None = None  # a checkpoint; None: the registry's champion (the shipped model at first)
    model_ref: str | None = None  # how the registry names ``model`` (recorded in survey.json)
    assume_crs: str | None = None  # for a raster without one
    aoi: str | None = None  # a vector file of polygons: the part of the raster to survey
    aoi_layer: str | None = None  # its layer (None: the first)
    job: dict[str, str] = Field(default_factory=dict)  # the owner's job details (pipeline.job)
    report: bool = True  # write the defect report too
    track: bool = True  # log the survey to MLflow
    chunk_blocks: int = Field(4, ge=0)  # blocks per inference task (0: all in one)


class SurveyOutcome(BaseModel):
    """What a survey returns: the record it wrote to survey.json, the report's summary (None without
    a report) and the MLflow run (None untracked)."""

    record: SurveyRecord
    report: ReportResult | None = None
    mlflow_run: str | None = None


@dataclass(frozen=True)
class ResolvedModel:
    """The checkpoint a survey runs and its registry name (None for a file given by path)."""

    path: str
    ref: str | None = None


@dataclass(frozen=True)
class Step(Generic[R]):
    """One named step of the survey; a runner decides where ``run`` executes."""

    name: str
    run: Callable[..., R]


def _resolve_model(request: SurveyRequest) -> ResolvedModel:
    from pipeline.tracking.registry import resolve_default_model

    path, ref = resolve_default_model(request.params.registry.name, request.params.registry.alias)
    return ResolvedModel(str(path), ref)


def _validate(request: SurveyRequest, model: ResolvedModel) -> PreparedSurvey:
    return prepare_survey(
        request.ortho,
        request.out,
        request.params.survey,
        model_path=model.path,
        model_ref=model.ref,
        assume_crs=request.assume_crs,
        aoi=request.aoi,
        aoi_layer=request.aoi_layer,
        job=request.job,
    )


def _plan_chunks(prepared: PreparedSurvey, chunk_blocks: int) -> list[list[int]]:
    """Chunks of the blocks still to infer (finished ones, from a killed run, are skipped)."""
    todo = sorted(set(range(prepared.n_blocks)) - prepared.store.done())
    size = chunk_blocks or max(len(todo), 1)
    return [todo[i : i + size] for i in range(0, len(todo), size)]


def _infer_chunk(prepared: PreparedSurvey, indices: list[int]) -> BlockCounts:
    return infer_blocks(prepared, indices)


def _stitch(stitcher: Stitcher, infer_s: float, reused: int, started: float) -> SurveyRecord:
    return stitcher.finish(infer_s=infer_s, reused=reused, started=started)


def _report(request: SurveyRequest) -> ReportResult:
    from pipeline.report.build import report_survey

    return report_survey(request.out, request.params.report)


def _track(request: SurveyRequest, record: SurveyRecord, summary: ReportResult | None) -> str:
    from pipeline.tracking.runs import log_survey

    return log_survey(record, Path(request.out), summary)


RESOLVE_MODEL = Step("resolve model", _resolve_model)
VALIDATE = Step("validate", _validate)
PLAN_BLOCKS = Step("plan blocks", _plan_chunks)
INFER_BLOCKS = Step("infer blocks", _infer_chunk)  # fanned out: one call per chunk
STITCH = Step("stitch COG", _stitch)
REPORT = Step("report", _report)
TRACK = Step("log to MLflow", _track)
STEPS: tuple[Step[Any], ...] = (RESOLVE_MODEL, VALIDATE, PLAN_BLOCKS, INFER_BLOCKS, STITCH, REPORT, TRACK)


class StepRunner(Protocol):
    """Where the steps of a survey execute."""

    def call(self, step: Step[R], *args: Any) -> R:
        """Run one step and return its result."""
        ...

    def fan_out(self, step: Step[R], calls: Sequence[tuple[Any, ...]]) -> Iterator[R]:
        """Run one step once per argument tuple; results in the order they finish."""
        ...

    def progress(self, done: int, total: int) -> None:
        """Blocks finished so far (reused ones included)."""
        ...


class LocalRunner:
    """Every step in this process, one after another (the engine's own thread pools still overlap
    reading, inference and storing within a chunk)."""

    def __init__(self, on_progress: Callable[[int, int], None] | None = None) -> None:
        self.on_progress = on_progress

    def call(self, step: Step[R], *args: Any) -> R:
        """Run the step here."""
        return step.run(*args)

    def fan_out(self, step: Step[R], calls: Sequence[tuple[Any, ...]]) -> Iterator[R]:
        """Run the calls here, one after another (lazily: progress follows each)."""
        return (step.run(*args) for args in calls)

    def progress(self, done: int, total: int) -> None:
        """Hand the count to the callback, if any."""
        if self.on_progress:
            self.on_progress(done, total)


def prepare(request: SurveyRequest, runner: StepRunner | None = None) -> PreparedSurvey:
    """Resolve the model and validate input, model, GSD and output folder (no weights loaded).

    The tracking store is initialised here, once per survey, before any fan-out: concurrent
    first-time migrations of an SQLite store fail, and a broken store is then one line. With a
    model named, that comes after the validation: opening the store takes seconds, and a mistake in
    the survey's own arguments should not wait for it (nor create a store it never uses).
    """
    from pipeline.tracking.store import init_tracking

    runner = runner or LocalRunner()
    if request.model is None:  # the registry names the model
        init_tracking()
        model = runner.call(RESOLVE_MODEL, request)
    else:
        model = ResolvedModel(request.model, request.model_ref)
    prepared = runner.call(VALIDATE, request, model)
    if request.track and request.model is not None:
        init_tracking()
    return prepared


def run_plan(request: SurveyRequest, runner: StepRunner, prepared: PreparedSurvey | None = None) -> SurveyOutcome:
    """Execute the survey with ``runner``; ``prepared``: the result of ``prepare(request)`` when the
    caller validated first (to report mistakes before any orchestration starts)."""
    started = time.perf_counter()
    with exclusive(request.out):  # one survey per folder (re-entrant: a caller may hold it already)
        prepared = prepared or prepare(request, runner)
        chunks = runner.call(PLAN_BLOCKS, prepared, request.chunk_blocks)
        total = prepared.n_blocks
        reused = done = total - sum(len(chunk) for chunk in chunks)
        runner.progress(done, total)
        infer_started = time.perf_counter()
        with Stitcher(prepared) as stitcher:  # the COGs are written from the store while blocks land in it
            stitcher.follow()
            for counts in runner.fan_out(INFER_BLOCKS, [(prepared, chunk) for chunk in chunks]):
                done += counts.computed + counts.reused
                runner.progress(done, total)
            infer_s = time.perf_counter() - infer_started
            record = runner.call(STITCH, stitcher, infer_s, reused, started)
        summary = runner.call(REPORT, request) if request.report else None
        mlflow_run = runner.call(TRACK, request, record, summary) if request.track else None
    return SurveyOutcome(record=record, report=summary, mlflow_run=mlflow_run)


__all__ = [
    "STEPS",
    "LocalRunner",
    "ResolvedModel",
    "Step",
    "StepRunner",
    "SurveyOutcome",
    "SurveyRequest",
    "prepare",
    "run_plan",
]
