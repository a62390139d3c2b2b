"""What a crack history's change report compared (comparison.json beside its changes.gpkg), so that
the history run again uses it instead of comparing the pair anew.

The inbox writes a structure's history after each new flight: without this, the n-th flight
compared every earlier pair again (n - 1 pairs and n - 2 against the latest, each minutes at
bridge scale), though only the new flight's comparisons can have changed. A comparison is used
again only when nothing it read has changed: both surveys' defects.gpkg and survey.json (their
bytes), their masks and orthomosaics (path, size, modification time), the report settings and
the code that compared them (the release and the library's source: a developer's edit between two
runs of a history bench is a new comparison too).
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

from affine import Affine
from blake3 import blake3

import pipeline
from pipeline import __version__
from pipeline.config import ReportConfig
from pipeline.fingerprint import file_fingerprint
from pipeline.fsutil import write_json
from pipeline.report.build import survey_image
from pipeline.report.registration import Registration
from pipeline.survey_folder import SurveyFolder
from pipeline.survey_record import RECORD_NAME, read_survey_record

RECORD = "comparison.json"


@cache
def _library_source() -> str:
    """The BLAKE3 of the library's Python source (pipeline/**/*.py), read once per process."""
    digest = blake3()
    root = Path(pipeline.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _stat(path: Path | None) -> list[Any] | None:
    if path is None or not path.is_file():
        return None
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _fingerprint(path: Path) -> str | None:
    return file_fingerprint(path) if path.is_file() else None


def _survey_state(folder: Path) -> dict[str, Any]:
    """What a comparison reads of one survey, as it is now."""
    folder = Path(folder).resolve()
    survey = SurveyFolder(folder)
    return {
        "folder": str(folder),
        "defects": _fingerprint(survey.gpkg),
        "record": _fingerprint(folder / RECORD_NAME),
        "mask": _stat(survey.mask),
        "image": _stat(survey_image(read_survey_record(folder), None)),
    }


def comparison_key(old_dir: Path, new_dir: Path, cfg: ReportConfig) -> dict[str, Any]:
    """Everything a comparison of ``old_dir`` with ``new_dir`` depends on."""
    return {
        "msaf": __version__,
        "source": _library_source(),
        "report": cfg.model_dump(mode="json"),
        "old": _survey_state(old_dir),
        "new": _survey_state(new_dir),
    }


def _registration_fields(registration: Registration) -> dict[str, Any]:
    values = {field.name: getattr(registration, field.name) for field in fields(registration)}
    return values | {"transform": list(registration.transform)[:6]}


def record_comparison(out: Path, old_dir: Path, new_dir: Path, cfg: ReportConfig, registration: Registration) -> None:
    """Write comparison.json into a change report's folder, once its files are written."""
    write_json(
        out / RECORD,
        {"key": comparison_key(old_dir, new_dir, cfg), "registration": _registration_fields(registration)},
    )


def recorded_comparison(out: Path, old_dir: Path, new_dir: Path, cfg: ReportConfig) -> Registration | None:
    """The registration of the change report in ``out`` when it compared these two surveys as they
    are now, with these settings; None when it must be compared again (or was never recorded)."""
    try:
        recorded = json.loads((out / RECORD).read_text())
        if recorded["key"] != json.loads(json.dumps(comparison_key(old_dir, new_dir, cfg))):
            return None
        values = dict(recorded["registration"])
        values["transform"] = Affine(*values["transform"])
        values["spread_m"] = math.nan if values["spread_m"] is None else values["spread_m"]
        return Registration(**values)
    except (OSError, ValueError, KeyError, TypeError):
        return None
