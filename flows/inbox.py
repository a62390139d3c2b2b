"""Scheduled survey processing: scan an inbox, process every new orthomosaic exactly once.

The inbox is untrusted: a symlink pointing out of it is never followed, a file still being written
(changed in the last ``settle_seconds``, or named ``*.part``) waits for the next run, and a file
that fails is recorded in the ledger (``.failed``, with the reason) while the others go on.

An orthomosaic's job details may lie beside it as ``<name>.yaml`` (``structure_id``, ``flight_date``,
...: what ``--meta-file`` takes). Each new survey is compared with the latest earlier survey of the
same ground in ``out`` (``pipeline.report.epochs``) into ``out/changes/<old>--<new>``, and once a
ground has three surveys or more its crack history (``msaf history``) is written again over all of
them into ``out/histories/<structure_id, else the first survey's folder>``. A comparison or history
that fails is logged and recorded, and never fails the survey.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

import flows  # noqa: F401  (telemetry defaults)
from flows.ledger import Ledger
from flows.survey import survey_flow
from pipeline.config import Params, load_params_or_defaults
from pipeline.errors import MsafError
from pipeline.job import parse_job
from pipeline.report.compare import compare_surveys
from pipeline.report.epochs import earlier_epochs
from pipeline.report.history import crack_history
from pipeline.survey_folder import LOCK_NAME
from pipeline.survey_plan import SurveyRequest
from pipeline.survey_record import read_survey_record

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2"}
JOB_SUFFIXES = (".yaml", ".yml")
CHANGES = "changes"  # out/changes/<old>--<new>: each survey against the one before it
HISTORIES = "histories"  # out/histories/<ground>: each crack through every survey of one ground


def arrivals(inbox: Path, settle_seconds: float) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Raster files ready to survey, and the ones skipped with why (symlinks out, still being written)."""
    root = inbox.resolve()
    ready, skipped = [], []
    now = time.time()
    for path in sorted(inbox.iterdir()):
        if path.suffix.lower() not in RASTER_SUFFIXES:
            continue
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            skipped.append((path, f"a link to {resolved}, outside the inbox"))
            continue
        if not resolved.is_file():
            continue
        if now - resolved.stat().st_mtime < settle_seconds:
            skipped.append((path, f"changed in the last {settle_seconds:g} s (still being copied?)"))
            continue
        ready.append(path)
    return ready, skipped


def job_beside(path: Path, inbox: Path) -> dict[str, str]:
    """The job details in ``<name>.yaml`` beside an orthomosaic (none: no file); one kept in the
    inbox like the orthomosaic itself."""
    for suffix in JOB_SUFFIXES:
        sidecar = path.with_suffix(suffix)
        if sidecar.is_file():
            if not sidecar.resolve().is_relative_to(inbox.resolve()):
                raise MsafError(f"{sidecar.name} links outside the inbox; put the job details in the inbox itself")
            return parse_job([], sidecar)
    return {}


def surveys_in(out: Path) -> list[Path]:
    """The survey folders the inbox wrote into ``out`` (not its ledger, changes or histories)."""
    return [
        p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in (CHANGES, HISTORIES)
    ]


def compare_with_previous(survey: Path, out: Path, params: Params) -> dict[str, str]:
    """Compare a new survey with the latest earlier one of the same ground in ``out``, and follow its
    cracks through every earlier one once there are two or more: what the ledger records of it
    (nothing when there is none before it)."""
    earlier = earlier_epochs(survey, surveys_in(out))
    if not earlier:
        return {}
    before = earlier[-1]
    changes = out / CHANGES / f"{before.name}--{survey.name}"
    try:
        result = compare_surveys(before, survey, changes, params.report)
    except Exception as exc:  # the survey stands whatever its comparison does
        return {"compared_with": str(before), "changes_error": f"{type(exc).__name__}: {exc}"[:500]}
    compared = {"compared_with": str(before), "changes": str(changes), "registration": result.registration.summary()}
    return compared | (follow_through_history([*earlier, survey], out, params) if len(earlier) >= 2 else {})


def history_folder(surveys: list[Path], out: Path) -> Path:
    """Where a ground's history goes: named by the latest survey's structure_id, else by the first
    survey's folder (a ground keeps its first survey)."""
    record = read_survey_record(surveys[-1])
    structure = record.job.get("structure_id") if record is not None else None
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(structure)).strip("._") if structure else ""
    return out / HISTORIES / (name or surveys[0].name)


def follow_through_history(surveys: list[Path], out: Path, params: Params) -> dict[str, str]:
    """The crack history of one ground over ``surveys`` (oldest first), written again with the new one:
    what the ledger records of it."""
    folder = history_folder(surveys, out)
    try:
        result = crack_history(surveys, folder, params.report)
    except Exception as exc:  # the survey and its change report stand whatever the history does
        return {"history_error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"history": str(folder), "trends": result.summary()}


def _drop_if_empty(folder: Path) -> None:
    """A survey refused before any work leaves no folder behind (its lock file is all it holds)."""
    if folder.is_dir() and all(item.name == LOCK_NAME for item in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)


@flow(name="msaf-inbox", log_prints=True)
def inbox_flow(
    inbox: str,
    out: str,
    model: str | None = None,
    params_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    track: bool = True,
    settle_seconds: float = 30.0,
) -> list[str]:
    """Survey every orthomosaic in ``inbox`` not yet processed; returns the new survey folders.

    Each file is keyed by its content fingerprint (renamed or copied files are not processed
    twice) and claimed atomically in ``out/.ledger`` (overlapping runs never share a file).
    """
    logger = get_run_logger()
    inbox_dir, out_dir = Path(inbox), Path(out)
    if not inbox_dir.is_dir():
        raise FileNotFoundError(f"inbox folder not found: {inbox_dir}")
    params = load_params_or_defaults(params_path, overrides)  # once: every file is surveyed alike
    ledger = Ledger(out_dir / ".ledger")
    ready, skipped = arrivals(inbox_dir, settle_seconds)
    for path, why in skipped:
        logger.warning("skipped %s: %s", path.name, why)
    processed = []
    try:
        for path in ready:
            key = ledger.fingerprint(path)
            if ledger.adopt_earlier(path, key) or not ledger.claim(key, str(path)):
                continue
            target = out_dir / f"{path.stem}-{key[:8]}"
            try:
                request = SurveyRequest(
                    ortho=str(path),
                    out=str(target),
                    params=params,
                    model=model,
                    track=track,
                    job=job_beside(path, inbox_dir),
                )
                outcome = survey_flow(request=request)
            except Exception as exc:  # one bad file never stops the others
                ledger.fail(key, {"source": str(path), "error": f"{type(exc).__name__}: {exc}"[:500]})
                logger.error("failed %s: %s", path.name, exc)
                _drop_if_empty(target)
                continue
            compared = compare_with_previous(target, out_dir, params) if outcome.report else {}
            if "changes_error" in compared:
                logger.warning(
                    "%s: no change report against %s: %s",
                    path.name,
                    compared["compared_with"],
                    compared["changes_error"],
                )
            elif compared:
                logger.info(
                    "%s compared with %s -> %s (%s)",
                    path.name,
                    compared["compared_with"],
                    compared["changes"],
                    compared["registration"],
                )
            if "history_error" in compared:
                logger.warning("%s: no crack history: %s", path.name, compared["history_error"])
            elif "history" in compared:
                logger.info("%s: crack history -> %s (%s)", path.name, compared["history"], compared["trends"])
            ledger.finish(
                key,
                {
                    "source": str(path),
                    "survey": str(target),
                    "defects": outcome.report.defects if outcome.report else None,
                }
                | compared,
            )
            logger.info("processed %s -> %s", path.name, target)
            processed.append(str(target))
    finally:
        ledger.keep_fingerprints()
    logger.info("%d new orthomosaic(s) processed", len(processed))
    return processed
