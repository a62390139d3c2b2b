"""survey.json: the typed record of one survey, written by the stitch step and read by the CLI,
the flows, tracking and the report.

Versioned like the checkpoint metadata: a record from a newer release, or a damaged one, is one
clear error instead of a KeyError deep in the report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import MsafError, first_problem
from pipeline.fsutil import write_json
from pipeline.inference.scales import scales_key
from pipeline.survey_folder import SurveyFolder

RECORD_VERSION = 1
RECORD_NAME = SurveyFolder.RECORD


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class InputRecord(_Record):
    """The orthomosaic as the survey saw it (``SourceInfo.describe()`` plus its fingerprint)."""

    path: str
    kind: str = "file"
    width: int
    height: int
    bands: int
    dtype: str
    crs: str
    crs_assumed: bool = False
    transform: list[float]
    nodata: float | None = None
    alpha: bool = False
    footprint: Literal["alpha", "nodata", "mask", "none"] | None = None  # how the file marks it; None: older
    compression: str | None = None
    block_shape: list[Any] = Field(default_factory=list)
    gsd_m: float | None = None
    scaling: list[list[float]] | None = None
    megapixels: float
    fingerprint: str


class CollarRecord(_Record):
    """The fill a footprint-less orthomosaic was painted with, taken as nodata (``survey.collar``)."""

    near: int
    size: int
    smear: int = 0
    white: bool = False

    @property
    def colours(self) -> str:
        """The fill's colours, in words."""
        return "black and white" if self.white else "black"


class AreaRecord(_Record):
    """The area of interest a survey kept to: its file, the file's fingerprint, its size on the raster."""

    path: str
    fingerprint: str
    area_m2: float
    raster_share: float


class ModelRecord(_Record):
    """Which model made the mask (the checkpoint's hash is the identity; the path is where it was)."""

    path: str
    sha256: str
    name: str
    preset: str
    registry: str | None = None
    classes: list[str]
    tile_size: int
    gsd_m: float | None = None


class TilingRecord(_Record):
    """How the raster was cut: tile, overlap, block, batch and the counts that follow."""

    tile: int
    overlap: int
    block: int
    batch: int
    tiles: int
    blocks: int
    blocks_reused: int
    tile_shape: list[int]
    resample_factor: float = 1.0  # working pixels per input pixel (survey.resample)
    working_gsd_m: float | None = None  # the GSD of the grid the model ran on (its 1x view's unless views)
    working_shape: list[int] | None = None  # (rows, cols) of the grid the model ran on
    views: list[float] | None = None  # the views on that grid when not the survey's scales (a finer input)


class TimingRecord(_Record):
    """Seconds per stage and in total."""

    validate_s: float
    infer_s: float
    cog_s: float
    total_s: float


class ThroughputRecord(_Record):
    """Megapixels per second: of the inference alone and end to end."""

    inference: float | None
    end_to_end: float


class SurveyRecord(_Record):
    """Everything a report, a comparison or an auditor needs to know about how a mask was made."""

    record_version: int = RECORD_VERSION
    software_version: str
    created_utc: str
    job: dict[str, Any] = Field(default_factory=dict)
    input: InputRecord
    area_of_interest: AreaRecord | None = None  # None: the whole raster was surveyed
    collar: CollarRecord | None = None  # None: the file's own footprint (or none) was used as it is
    model: ModelRecord
    tiling: TilingRecord
    device: str
    torch: str
    tta: bool
    scales: list[float] = Field(default_factory=lambda: [1.0])  # the views averaged (survey.scales)
    thresholds: dict[str, float] | None = None  # the decision's calibrated thresholds; None: not recorded (older)
    exposure_floor: float | None = None  # tiles darker than this luminance were lifted to it; None: not recorded
    compile: bool
    precision: Literal["fp32", "bf16"] | None = None  # the network's arithmetic; None: recorded before the setting
    workers: int
    readers: int
    gsd_warning: str | None = None
    class_pixels: dict[str, int]
    outputs: dict[str, str]
    timings: TimingRecord
    throughput_mpix_s: ThroughputRecord
    peak_rss_mb: float

    @property
    def model_gsd_m(self) -> float | None:
        """The ground per pixel of the model's 1x view (its working GSD), whichever grid the survey ran
        on: a finer input surveyed on its own pixels with views 0.5,1 is seen at the same GSD as one
        reduced to the model's with views 1,2."""
        working = self.tiling.working_gsd_m or self.input.gsd_m
        if working is None or not self.tiling.views:
            return working
        return working * self.scales[0] / self.tiling.views[0]

    @property
    def footprint(self) -> str:
        """Which pixels were ground, in words: what the file declares, and the fill taken as nodata
        (``survey.collar``), for the CLI's summary and the report's provenance."""
        declared = {"alpha": "the file's alpha band", "nodata": "the file's nodata value", "mask": "the file's mask"}
        own = declared.get(self.input.footprint or "", "")
        collar = self.collar
        if collar is None:
            unknown = "as the file declares it (not recorded)"
            return own or ("none declared: every pixel was surveyed" if self.input.footprint == "none" else unknown)
        fill = (
            f"{collar.colours} fill taken as nodata ({collar.size} px across or more, within {collar.near} grey levels;"
            f" beside it, within {collar.smear}; survey.collar)"
        )
        return f"{own}, and {fill}" if own else f"none declared: {fill}"

    def with_job(self, job: dict[str, Any]) -> SurveyRecord:
        """The same record with more job details (a report's --meta adds to the survey's)."""
        return self.model_copy(update={"job": self.job | job})

    def write(self, survey_dir: Path) -> Path:
        """Write survey.json into ``survey_dir`` (atomically); its path."""
        path = Path(survey_dir) / RECORD_NAME
        write_json(path, self.model_dump(mode="json"))
        return path


def read_survey_record(survey_dir: Path) -> SurveyRecord | None:
    """survey.json of a survey folder; None when absent (the mask's own tags then serve).
    A damaged or foreign one is one clear line."""
    path = Path(survey_dir) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise MsafError(
            f"{path} is corrupt ({str(exc)[:80]}); rerun `msaf survey` (finished blocks are reused) "
            "or delete it to report from the mask alone"
        ) from None
    if isinstance(raw, dict) and isinstance(raw.get("record_version"), int) and raw["record_version"] > RECORD_VERSION:
        raise MsafError(
            f"{path}: written by a newer msaf-pipeline (record version {raw['record_version']}, "
            f"this one reads up to {RECORD_VERSION}); upgrade msaf-pipeline"
        )
    try:
        return SurveyRecord.model_validate(raw)
    except ValidationError as exc:
        raise MsafError(
            f"{path} is not a survey record ({first_problem(exc)}); rerun `msaf survey` "
            "or delete it to report from the mask alone"
        ) from None


def fill_taken(record: SurveyRecord) -> str:
    """The collar rule a survey took as nodata, briefly ("no" when none was looked for)."""
    collar = record.collar
    if collar is None:
        return "no"
    return f"{collar.colours}, within {collar.near} levels in {collar.size}-px squares, beside it {collar.smear}"


def method_differences(old: SurveyRecord | None, new: SurveyRecord | None) -> list[str]:
    """What differs in how two surveys were made (model, views, flips, decision thresholds, the GSD
    the model saw, the shadow lift's floor, the painted-in fill taken as nodata), each as "what: old ->
    new"; empty when the same or when a record is missing: a change report warns that part of what
    changed may be the method."""
    if old is None or new is None:
        return []

    def views(record: SurveyRecord) -> str:
        return scales_key(record.scales) + (" + flips" if record.tta else "")

    def gsd(record: SurveyRecord) -> str:
        working = record.model_gsd_m
        return f"{working * 1000:.3g} mm" if working else "unknown"

    def thresholds(record: SurveyRecord) -> str:
        return ", ".join(f"{n} {t:g}" for n, t in sorted((record.thresholds or {}).items())) or "argmax"

    aspects: dict[str, Callable[[SurveyRecord], str]] = {
        "model": lambda r: f"{r.model.name} {r.model.sha256[:12]}",
        "views": views,
        "GSD the model saw": gsd,
    }
    if old.thresholds is not None and new.thresholds is not None:  # recorded by both (this release on)
        aspects["thresholds"] = thresholds
    if old.exposure_floor is not None and new.exposure_floor is not None:
        aspects["exposure floor"] = lambda r: f"{r.exposure_floor:g}"
    if old.input.footprint is not None and new.input.footprint is not None:  # recorded by both (this release on)
        aspects["painted-in fill taken as nodata"] = fill_taken
    return [f"{what}: {show(old)} -> {show(new)}" for what, show in aspects.items() if show(old) != show(new)]
