"""One epoch of training as a typed record, and its flat form (the columns of train_history.csv,
the checkpoint's ``history`` and MLflow's per-epoch metrics)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

TIMINGS = ("seconds", "val_seconds")  # wall-clock fields: never written into a checkpoint or the CSV


class EpochRecord(BaseModel):
    """Loss, learning rate and validation scores after one epoch; per-set scores and calibrated
    thresholds by name."""

    epoch: int
    loss: float
    lr: float
    val_miou: float
    val_fg_iou: float
    val_fg_f1: float
    val_fg_tol_f1: float
    val_score: float
    set_scores: dict[str, float] = Field(default_factory=dict)  # validation score of each data set
    thresholds: dict[str, float] = Field(default_factory=dict)  # class -> probability threshold
    seconds: float | None = None  # the epoch, validation included
    val_seconds: float | None = None

    def flat(self, timings: bool = True) -> dict[str, Any]:
        """The record as flat columns: ``val_<set>_score``, ``threshold_<class>`` (timings last)."""
        row = self.model_dump(exclude={"set_scores", "thresholds", *TIMINGS})
        row |= {f"val_{name}_score": score for name, score in self.set_scores.items()}
        row |= {f"threshold_{name}": value for name, value in self.thresholds.items()}
        if timings:
            row |= {name: getattr(self, name) for name in TIMINGS}
        return row

    @classmethod
    def from_flat(cls, row: dict[str, Any]) -> EpochRecord:
        """Read a flat record back (a resumed training's state keeps its history flat)."""
        fixed = {name for name in cls.model_fields if name not in ("set_scores", "thresholds")}
        sets = {k[len("val_") : -len("_score")]: v for k, v in row.items() if _is_set_score(k)}
        thresholds = {k[len("threshold_") :]: v for k, v in row.items() if k.startswith("threshold_")}
        return cls(**{k: v for k, v in row.items() if k in fixed}, set_scores=sets, thresholds=thresholds)


def _is_set_score(key: str) -> bool:
    return key.startswith("val_") and key.endswith("_score") and key != "val_score"
