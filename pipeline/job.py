"""Who and what a survey is for: the job details an owner files a report under.

Given as ``--meta KEY=VALUE`` (repeatable) and/or ``--meta-file job.yaml``; recorded in
survey.json, shown at the top of the report and stored as GeoPackage metadata. Known keys are
checked (a flight date must be a date); other keys are kept as given.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import yaml

from pipeline.errors import MsafError

KNOWN_KEYS = {
    "structure_id": "structure",
    "element": "element",
    "inspector": "inspector",
    "flight_date": "flight date",
    "notes": "notes",
    "axis_deg": "structure axis (° from grid north)",
}


def parse_job(items: list[str], meta_file: Path | None = None) -> dict[str, str]:
    """Job details from a YAML file, then ``KEY=VALUE`` items (which win); every mistake is one line."""
    job: dict[str, str] = {}
    if meta_file is not None:
        try:
            loaded = yaml.safe_load(Path(meta_file).read_text())
        except OSError as exc:
            raise MsafError(f"--meta-file {meta_file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise MsafError(f"--meta-file {meta_file}: not YAML ({str(exc).splitlines()[0]})") from None
        except UnicodeDecodeError as exc:
            raise MsafError(f"--meta-file {meta_file}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        except ValueError as exc:  # YAML reads 2026-13-45 as a date and fails: say which value
            raise MsafError(f"--meta-file {meta_file}: {exc}; write dates as YYYY-MM-DD (quote other text)") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise MsafError(f"--meta-file {meta_file}: expected KEY: VALUE lines (a mapping)")
        job |= {str(k): "" if v is None else str(v) for k, v in (loaded or {}).items()}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MsafError(f"--meta expects KEY=VALUE (e.g. structure_id=BR-0042), got {item!r}")
        job[key.strip()] = value.strip()
    return validate_job(job)


def validate_job(job: dict[str, str]) -> dict[str, str]:
    """Keys as identifiers, a real ISO flight date; values are text."""
    for key in job:
        if not key.replace("_", "").replace("-", "").isalnum():
            raise MsafError(f"job key {key!r}: use letters, digits, '_' or '-' (e.g. structure_id)")
    if date := job.get("flight_date"):
        try:
            job["flight_date"] = dt.date.fromisoformat(date).isoformat()
        except ValueError:
            raise MsafError(f"flight_date {date!r} is not a date; use YYYY-MM-DD") from None
    if axis := job.get("axis_deg"):
        job["axis_deg"] = f"{_degrees(axis):g}"
    return job


def axis_degrees(value: object) -> float | None:
    """An axis (an undirected line) in degrees clockwise from grid north, folded into [0, 180); None
    when ``value`` is not a finite number. The one reading of an ``axis_deg``, the job's or an element's."""
    try:
        degrees = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return degrees % 180 if math.isfinite(degrees) else None


def _degrees(text: str) -> float:
    """The job's ``axis_deg``, folded; one line when it is not a number."""
    degrees = axis_degrees(text)
    if degrees is None:
        raise MsafError(
            f"axis_deg {text!r} is not a number; give the structure's axis (a deck: the direction of traffic) "
            "in degrees clockwise from grid north, e.g. axis_deg=72"
        )
    return degrees


def job_axis(job: dict[str, str]) -> float | None:
    """The structure's axis the job gives (``axis_deg``), if any: cracks outside every element are
    typed by it."""
    return _degrees(job["axis_deg"]) if job.get("axis_deg") else None


def job_rows(job: dict[str, str]) -> dict[str, str]:
    """Display labels in a fixed order: known keys first, then the rest as given."""
    rows = {label: job[key] for key, label in KNOWN_KEYS.items() if job.get(key)}
    return rows | {key.replace("_", " "): value for key, value in job.items() if key not in KNOWN_KEYS and value}
