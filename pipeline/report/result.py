"""What a report found and wrote (a light module: the flows and tracking import it without the report's libraries)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReportResult(BaseModel):
    """What a report found and wrote: the CLI prints it, the flows and tracking record it."""

    model_config = ConfigDict(extra="forbid")

    defects: int
    by_class: dict[str, int]  # defects per defect class
    non_defects: dict[str, int]  # outlines per non-defect class (joints): context, never counted
    cracks_by_type: dict[str, int] = Field(default_factory=dict)  # cracks (pieces linked into one) per crack type
    condition_m2: dict[str, float] = Field(default_factory=dict)  # surveyed area per condition state (cracking)
    unrated_m2: dict[str, float] = Field(default_factory=dict)  # too dark / overexposed / blurred to show a crack
    blur_px: float | None = None  # the orthomosaic's blur over the surveyed ground (median, px); None: not read
    blur_mm: float | None = None  # the same on the ground
    outputs: dict[str, str]  # kind -> file name in the survey folder
