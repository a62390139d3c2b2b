"""Which earlier survey a new one is compared with: the latest survey of the same ground before it.

The scheduled inbox compares each new survey with the one before it, so a team that drops every
flight of a structure into one inbox gets the change report without asking for it. The same
ground: the same ``structure_id`` when both surveys' job details name one, else footprints that
overlap over at least ``min_overlap`` of the smaller. Before: by ``flight_date`` where a survey
gives one, else by when it was surveyed (ISO text either way, so a date and a time compare).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyproj
import rasterio

from pipeline.errors import MsafError
from pipeline.raster.ground import working_crs
from pipeline.report.footprint import survey_footprint
from pipeline.survey_folder import SurveyFolder
from pipeline.survey_record import SurveyRecord, read_survey_record

MIN_OVERLAP = 0.5  # footprints sharing this much of the smaller one are the same ground
DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class FlightInterval:
    """The time between two surveys' flights, from their job details' flight dates."""

    old_date: str
    new_date: str
    days: int

    @property
    def years(self) -> float:
        """The interval in years (of 365.25 days)."""
        return self.days / DAYS_PER_YEAR

    def describe(self) -> str:
        """E.g. '412 days (2025-10-20 -> 2026-12-05)'."""
        return f"{self.days} days ({self.old_date} → {self.new_date})"


def flight_interval(old: SurveyRecord | None, new: SurveyRecord | None) -> FlightInterval | None:
    """Days from the old survey's flight to the new one's; None unless both give a flight_date (when
    a survey ran says nothing about when it was flown)."""
    dates = [record.job.get("flight_date") if record is not None else None for record in (old, new)]
    if not dates[0] or not dates[1]:
        return None
    old_date, new_date = (dt.date.fromisoformat(str(date)[:10]) for date in dates)
    return FlightInterval(old_date.isoformat(), new_date.isoformat(), (new_date - old_date).days)


@dataclass(frozen=True)
class Epoch:
    """A finished survey folder and its record."""

    folder: Path
    record: SurveyRecord

    @property
    def when(self) -> str:
        """The flight date when the job gives one, else when the survey ran (ISO text)."""
        return self.record.job.get("flight_date") or self.record.created_utc

    @property
    def structure(self) -> str | None:
        """The structure the job names, if any."""
        return self.record.job.get("structure_id") or None


def _epoch(folder: Path) -> Epoch | None:
    """The folder as an epoch; None when it is not a finished, readable survey."""
    if not SurveyFolder(folder).mask.is_file():
        return None
    try:
        record = read_survey_record(folder)
    except MsafError:
        return None
    return Epoch(folder, record) if record is not None else None


def _area_crs(mask: Path) -> pyproj.CRS:
    """A CRS to measure footprint areas in: ground metres over the mask (``working_crs``)."""
    with rasterio.open(mask) as ds:
        return working_crs(ds.crs, tuple(ds.bounds))


def _same_ground(new: Epoch, old: Epoch, min_overlap: float) -> bool:
    if new.structure and old.structure:
        return new.structure == old.structure
    crs = _area_crs(SurveyFolder(new.folder).mask)
    a, b = survey_footprint(new.folder, crs), survey_footprint(old.folder, crs)
    if a is None or b is None or a.is_empty or b.is_empty:
        return False
    return a.intersection(b).area >= min_overlap * min(a.area, b.area)


def earlier_epochs(new_dir: Path, folders: Iterable[Path], min_overlap: float = MIN_OVERLAP) -> list[Path]:
    """The surveys among ``folders`` of the same ground as ``new_dir`` flown before it, oldest first;
    none when ``new_dir`` is not a finished survey. The scheduled inbox follows a structure's cracks
    through all of them (``msaf history``)."""
    new = _epoch(Path(new_dir))
    if new is None:
        return []
    earlier = [
        epoch
        for folder in folders
        if Path(folder).resolve() != Path(new_dir).resolve()
        and (epoch := _epoch(Path(folder))) is not None
        and epoch.when < new.when
    ]
    return [epoch.folder for epoch in sorted(earlier, key=lambda e: e.when) if _same_ground(new, epoch, min_overlap)]


def previous_epoch(new_dir: Path, folders: Iterable[Path], min_overlap: float = MIN_OVERLAP) -> Path | None:
    """The latest survey among ``folders`` of the same ground as ``new_dir``, flown before it; None
    when there is none (or ``new_dir`` is not a finished survey)."""
    earlier = earlier_epochs(new_dir, folders, min_overlap)
    return earlier[-1] if earlier else None
