"""Typed metric summaries: what validation, `msaf evaluate`, the checkpoint and the registry share.

One shape for one group of images (``MetricsSummary``) and one for an evaluation over data sets
with a decision rule and a headline score (``EvaluationSummary``). An undefined metric (a class
no image holds) is NaN in memory and null in the strict JSON files (``fsutil.write_json``), and
reads back as NaN; absent values (no tolerant numbers for background) are left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from pipeline.errors import MsafError, first_problem
from pipeline.fsutil import write_json


def _undefined_is_nan(value: Any) -> Any:
    return float("nan") if value is None else value


Metric = Annotated[float, BeforeValidator(_undefined_is_nan)]  # null in JSON = NaN: undefined


class _Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    OPTIONAL_METRICS: ClassVar[frozenset[str]] = frozenset()  # absent = not measured; null = undefined

    @model_validator(mode="before")
    @classmethod
    def _null_is_undefined(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: float("nan") if v is None and k in cls.OPTIONAL_METRICS else v for k, v in data.items()}
        return data

    def to_json(self) -> dict[str, Any]:
        """The JSON form (metrics files, checkpoint metadata, MLflow)."""
        return self.model_dump(mode="json", exclude_none=True)


class ClassMetrics(_Summary):
    """One class: pixel-exact IoU/P/R/F1, tolerant P/R/F1 (foreground), what its pixels were called."""

    OPTIONAL_METRICS = frozenset({"tol_precision", "tol_recall", "tol_f1", "median_width_px", "median_true_width_px"})

    iou: Metric
    precision: Metric
    recall: Metric
    f1: Metric
    support: int
    tol_precision: Metric | None = None
    tol_recall: Metric | None = None
    tol_f1: Metric | None = None
    predicted_as: dict[str, float] | None = None
    median_width_px: Metric | None = None
    median_true_width_px: Metric | None = None


class MetricsSummary(_Summary):
    """Metrics of one group of images; foreground means leave out class 0 (background)."""

    OPTIONAL_METRICS = frozenset({"score"})

    classes: dict[str, ClassMetrics]
    miou: Metric
    fg_iou: Metric
    fg_f1: Metric
    fg_tol_f1: Metric
    pixel_accuracy: Metric
    tolerance_px: float
    confusion_matrix: list[list[int]]
    images: int | None = None
    score: Metric | None = None  # per data set: tolerant F1 of the scored classes

    def class_tol_f1(self, name: str) -> float:
        """Tolerant F1 of one class; NaN where it is undefined or not measured."""
        value = self.classes[name].tol_f1
        return float("nan") if value is None else value


class EvaluationSummary(MetricsSummary):
    """Pooled metrics, one summary per data set, the decision thresholds and the headline ``score``
    (tolerant F1 of the scored classes, mean over the sets): what the champion gate compares."""

    sets: dict[str, MetricsSummary]
    thresholds: dict[str, float]
    score: Metric
    model: str | None = None
    epoch: int | None = None  # the training epoch it belongs to (validation during training)

    def write(self, path: Path) -> None:
        """Write the summary as strict JSON (undefined values as null)."""
        write_json(path, self.to_json())


def read_evaluation(path: Path) -> EvaluationSummary:
    """A metrics file of `msaf evaluate`; a missing, damaged or foreign one is one clear line."""
    path = Path(path)
    if not path.is_file():
        raise MsafError(f"metrics file not found: {path}; run the evaluate stage first")
    try:
        return EvaluationSummary.model_validate(json.loads(path.read_text()))
    except ValidationError as exc:
        reason = first_problem(exc)
    except (OSError, ValueError) as exc:
        reason = str(exc)[:80]
    raise MsafError(f"{path} is not an evaluation summary ({reason}); rerun `msaf evaluate`")
