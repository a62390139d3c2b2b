"""The words of change tracking, one vocabulary for cracks and areas (owned here so that the
comparison and its per-crack summary share it)."""

from __future__ import annotations

from enum import StrEnum


class ChangeStatus(StrEnum):
    """What happened to a defect between two surveys: one vocabulary for cracks and areas."""

    NEW = "new"
    MISSED_BEFORE = "missed before (visible then)"  # a new crack whose line the old orthomosaic shows
    EXTENDED = "extended"  # a crack: longer
    WIDENED = "widened"  # a crack: wider along the part that matches
    GROWN = "grown"  # an area defect: larger
    UNCHANGED = "unchanged"
    SHRUNK = "shrunk"
    NOT_FOUND = "not found (repaired?)"
    NOT_DETECTED = "not detected (still visible)"  # not found, but its line shows in the new orthomosaic
    NOT_SEEN = "not seen (too dark or blurred)"  # new or not found where the other image could not show it
    NOT_COVERED = "not covered"  # outside the ground both surveys imaged: neither new nor repaired
