"""Which survey a new one is compared with: the latest earlier survey of the same ground (and all of
them, for its history)."""

import json

import numpy as np

from pipeline.report.epochs import earlier_epochs, previous_epoch
from tests.conftest import write_mask_survey


def test_the_previous_epoch_is_the_latest_earlier_survey_of_the_same_ground(tmp_path, surveyed):
    template = json.loads((surveyed / "survey.json").read_text())

    def epoch(name: str, created: str, shift_px: float = 0, **job: str):
        folder = write_mask_survey(tmp_path / name, np.zeros((200, 300), np.uint8), shift_px=shift_px)
        (folder / "survey.json").write_text(json.dumps(template | {"job": job, "created_utc": created}))
        return folder

    older = epoch("older", "2024-05-01T10:00:00Z")
    last_year = epoch("last-year", "2025-05-01T10:00:00Z", shift_px=20)  # 2 cm off: the same ground
    elsewhere = epoch("elsewhere", "2025-09-01T10:00:00Z", shift_px=100_000)  # 100 m east: another bridge
    half = epoch("half", "2025-08-01T10:00:00Z", shift_px=200)  # two thirds of it outside the new one
    new = epoch("new", "2026-05-01T10:00:00Z")
    later = epoch("later", "2026-09-01T10:00:00Z")
    folders = [older, last_year, elsewhere, half, new, later, tmp_path / "not-a-survey"]
    assert previous_epoch(new, folders) == last_year
    assert previous_epoch(new, folders, min_overlap=0.3) == half
    assert earlier_epochs(new, folders) == [older, last_year]  # a history's surveys, oldest first
    assert earlier_epochs(new, folders, min_overlap=0.3) == [older, last_year, half]
    assert earlier_epochs(tmp_path / "not-a-survey", folders) == []
    assert previous_epoch(older, folders) is None  # nothing before the first
    assert previous_epoch(tmp_path / "not-a-survey", folders) is None

    # a flight processed late is placed by its flight date, and a structure id outranks the footprint
    flown_2024 = epoch("flown-2024", "2026-10-01T10:00:00Z", flight_date="2024-06-01")
    assert previous_epoch(flown_2024, [*folders, flown_2024]) == older
    other_span = epoch("other-span", "2025-10-01T10:00:00Z", structure_id="BR-2")
    span = epoch("span", "2026-10-02T10:00:00Z", structure_id="BR-1")
    same_id_elsewhere = epoch("same-id", "2025-01-01T10:00:00Z", shift_px=100_000, structure_id="BR-1")
    assert previous_epoch(span, [other_span, same_id_elsewhere]) == same_id_elsewhere  # other_span: not BR-1
    assert previous_epoch(span, [other_span, same_id_elsewhere, later]) == later  # untagged: by its footprint
