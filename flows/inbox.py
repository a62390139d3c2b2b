"""Scheduled survey processing: scan an inbox, process every new orthomosaic exactly once.

The inbox is untrusted: a symlink pointing out of it is never followed, a file still being written
(changed in the last ``settle_seconds``, or named ``*.part``) waits for the next run, and a file
that fails is recorded in the ledger (``.failed``, with the reason) while the others go on.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

import flows  # noqa: F401  (telemetry defaults)
from flows.ledger import Ledger
from flows.survey import survey_flow
from pipeline.config import load_params_or_defaults
from pipeline.survey_folder import LOCK_NAME
from pipeline.survey_plan import SurveyRequest

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2"}


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
                request = SurveyRequest(ortho=str(path), out=str(target), params=params, model=model, track=track)
                outcome = survey_flow(request=request)
            except Exception as exc:  # one bad file never stops the others
                ledger.fail(key, {"source": str(path), "error": f"{type(exc).__name__}: {exc}"[:500]})
                logger.error("failed %s: %s", path.name, exc)
                _drop_if_empty(target)
                continue
            ledger.finish(
                key,
                {
                    "source": str(path),
                    "survey": str(target),
                    "defects": outcome.report.defects if outcome.report else None,
                },
            )
            logger.info("processed %s -> %s", path.name, target)
            processed.append(str(target))
    finally:
        ledger.keep_fingerprints()
    logger.info("%d new orthomosaic(s) processed", len(processed))
    return processed
