"""The champion gate: a candidate replaces the champion only when, scored on the same held-back
data, it is better overall and no guarded set (the public sets) falls by more than a tolerance, on
the validation photos and, with ``registry.survey_size``, through the survey of a stitched mosaic
of them (where a tile sees less context than a photo).

A fine-tune on one inspection team's bridges can raise the mean while quietly forgetting concrete
or masonry; the gate names the set that regressed instead of promoting it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.data.manifest import Manifest
from pipeline.fsutil import cached_json
from pipeline.metrics.summary import EvaluationSummary


@dataclass(frozen=True)
class GateVerdict:
    """Whether to promote, and why, with the per-set scores compared (candidate, champion)."""

    promoted: bool
    reason: str
    per_set: dict[str, tuple[float, float | None]]
    survey: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # the same, through the survey


def judge(
    candidate: EvaluationSummary,
    champion: EvaluationSummary | None,
    guarded: list[str] | None,
    tolerance: float,
    candidate_survey: Mapping[str, float] | None = None,
    champion_survey: Mapping[str, float] | None = None,
) -> GateVerdict:
    """Compare a candidate with the champion scored on the same validation data (and, when both are
    given, on the same stitched surveys of it).

    ``guarded``: the sets that may not regress by more than ``tolerance`` (None: every set both were
    scored on). Without a champion the candidate is promoted.
    """
    per_set: dict[str, tuple[float, float | None]]
    surveyed = {name: (new, (champion_survey or {}).get(name)) for name, new in (candidate_survey or {}).items()}
    if champion is None:
        per_set = {name: (_score(s), None) for name, s in candidate.sets.items()}
        return GateVerdict(True, "no champion yet", per_set, surveyed)
    per_set = {
        name: (_score(s), _score(champion.sets[name]) if name in champion.sets else None)
        for name, s in candidate.sets.items()
    }
    regressed = _regressed(per_set, guarded, tolerance)
    regressed += [f"{item} through the survey" for item in _regressed(surveyed, guarded, tolerance)]
    if regressed:
        return GateVerdict(False, "regresses on " + ", ".join(regressed), per_set, surveyed)
    if not candidate.score >= champion.score:  # an undefined (NaN) score is never better
        reason = f"score {candidate.score:.4f} below the champion's {champion.score:.4f}"
        return GateVerdict(False, reason, per_set, surveyed)
    return GateVerdict(True, f"score {candidate.score:.4f} >= the champion's {champion.score:.4f}", per_set, surveyed)


def _regressed(pairs: dict[str, tuple[float, float | None]], guarded: list[str] | None, tolerance: float) -> list[str]:
    """The guarded sets whose new score fell below the old one by more than ``tolerance``."""
    watched = [n for n in (guarded if guarded is not None else list(pairs)) if n in pairs]
    return [
        f"{name} ({new:.3f} < {old:.3f} - {tolerance:g})"
        for name in watched
        if (old := pairs[name][1]) is not None and (new := pairs[name][0]) < old - tolerance
    ]


def _score(summary: object) -> float:
    value = getattr(summary, "score", None)
    return math.nan if value is None else float(value)


def held_back_key(checkpoint: Path, manifest: Manifest) -> dict[str, Any]:
    """What a cached score of a checkpoint on a manifest's validation split depends on: the
    checkpoint's bytes, the classes, and each set's validation stems and files."""
    from pipeline.checkpoint import file_sha256

    return {
        "checkpoint": file_sha256(checkpoint),
        "classes": [c.name for c in manifest.classes],
        "sets": [(s.name, s.val, s.fingerprint) for s in manifest.sets],
    }


def champion_evaluation(
    checkpoint: Path, manifest: Manifest, tolerance_px: float, cache_dir: Path
) -> EvaluationSummary:
    """The champion scored on a manifest's validation split, computed once per (checkpoint bytes,
    split, files, tolerance) and kept in ``cache_dir``: every register of a candidate against the
    same champion would otherwise run the same evaluation again."""
    from pipeline.evaluate import evaluate_sets

    return cached_json(
        cache_dir,
        held_back_key(checkpoint, manifest) | {"tolerance_px": tolerance_px},
        lambda: evaluate_sets(checkpoint, manifest.load("val"), device="cpu", tolerance_px=tolerance_px),
        EvaluationSummary.to_json,
        EvaluationSummary.model_validate,
    )


def scores_from_json(stored: dict[str, float | None]) -> dict[str, float]:
    """Scores read back from a cache entry: an undefined score (NaN) is stored as null."""
    return {name: math.nan if value is None else float(value) for name, value in stored.items()}


def champion_survey_scores(checkpoint: Path, manifest: Manifest, size: int, cache_dir: Path) -> dict[str, float]:
    """The champion's ``survey_scores``, kept per (checkpoint bytes, validation files, size) in
    ``cache_dir`` like its evaluation: it is surveyed once, not at every register."""
    from pipeline.survey_accuracy import survey_scores

    return cached_json(
        cache_dir,
        held_back_key(checkpoint, manifest) | {"survey_size": size},
        lambda: survey_scores(checkpoint, manifest, size),
        lambda scores: scores,
        scores_from_json,
    )
