"""Scheduled survey processing: scan an inbox, process every new orthomosaic exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

import flows  # noqa: F401  (telemetry defaults)
from flows.ledger import Ledger
from flows.survey import survey_flow
from pipeline.raster.source import file_fingerprint

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2"}


@flow(name="msaf-inbox", log_prints=True)
def inbox_flow(inbox: str, out: str, model: str | None = None, params_path: str = "params.yaml",
               overrides: dict[str, Any] | None = None, track: bool = True) -> list[str]:
    """Survey every orthomosaic in ``inbox`` not yet processed; returns the new survey folders.

    Each file is keyed by its content fingerprint (renamed or copied files are not processed
    twice) and claimed atomically in ``out/.ledger`` (overlapping runs never share a file).
    """
    logger = get_run_logger()
    inbox_dir, out_dir = Path(inbox), Path(out)
    if not inbox_dir.is_dir():
        raise FileNotFoundError(f"inbox folder not found: {inbox_dir}")
    ledger = Ledger(out_dir / ".ledger")
    processed = []
    for path in sorted(p for p in inbox_dir.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file()):
        key = file_fingerprint(path)
        if not ledger.claim(key, str(path)):
            continue
        target = out_dir / f"{path.stem}-{key[:8]}"
        try:
            record = survey_flow(ortho=str(path), out=str(target), model=model, params_path=params_path,
                                 overrides=overrides, track=track)
        except Exception:
            ledger.release(key)
            raise
        ledger.finish(key, {"source": str(path), "survey": str(target), "defects": (record.get("report") or {})
                            .get("defects")})
        logger.info("processed %s -> %s", path.name, target)
        processed.append(str(target))
    logger.info("%d new orthomosaic(s) processed", len(processed))
    return processed
