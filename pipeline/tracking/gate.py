"""The champion gate: a candidate replaces the champion only when, scored on the same held-back
data, it is better overall and no guarded set (the public sets) falls by more than a tolerance.

A fine-tune on one inspection team's bridges can raise the mean while quietly forgetting concrete
or masonry; the gate names the set that regressed instead of promoting it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.manifest import Manifest
from pipeline.metrics.summary import EvaluationSummary


@dataclass(frozen=True)
class GateVerdict:
    """Whether to promote, and why, with the per-set scores compared (candidate, champion)."""

    promoted: bool
    reason: str
    per_set: dict[str, tuple[float, float | None]]


def judge(
    candidate: EvaluationSummary,
    champion: EvaluationSummary | None,
    guarded: list[str] | None,
    tolerance: float,
) -> GateVerdict:
    """Compare a candidate with the champion scored on the same validation data.

    ``guarded``: the sets that may not regress by more than ``tolerance`` (None: every set both were
    scored on). Without a champion the candidate is promoted.
    """
    per_set: dict[str, tuple[float, float | None]]
    if champion is None:
        per_set = {name: (_score(s), None) for name, s in candidate.sets.items()}
        return GateVerdict(True, "no champion yet", per_set)
    per_set = {
        name: (_score(s), _score(champion.sets[name]) if name in champion.sets else None)
        for name, s in candidate.sets.items()
    }
    watched = [n for n in (guarded if guarded is not None else list(per_set)) if n in per_set]
    regressed = [
        f"{name} ({new:.3f} < {old:.3f} - {tolerance:g})"
        for name in watched
        if (old := per_set[name][1]) is not None and (new := per_set[name][0]) < old - tolerance
    ]
    if regressed:
        return GateVerdict(False, "regresses on " + ", ".join(regressed), per_set)
    if not candidate.score >= champion.score:  # an undefined (NaN) score is never better
        return GateVerdict(False, f"score {candidate.score:.4f} below the champion's {champion.score:.4f}", per_set)
    return GateVerdict(True, f"score {candidate.score:.4f} >= the champion's {champion.score:.4f}", per_set)


def _score(summary: object) -> float:
    value = getattr(summary, "score", None)
    return math.nan if value is None else float(value)


def champion_evaluation(
    checkpoint: Path, manifest: Manifest, tolerance_px: float, cache_dir: Path
) -> EvaluationSummary:
    """The champion scored on a manifest's validation split, computed once per (checkpoint bytes,
    split, files, tolerance) and kept in ``cache_dir``: every register of a candidate against the
    same champion would otherwise run the same evaluation again."""
    from pipeline.checkpoint import file_sha256
    from pipeline.evaluate import evaluate_sets
    from pipeline.fsutil import write_json

    identity = json.dumps(
        {
            "checkpoint": file_sha256(checkpoint),
            "classes": [c.name for c in manifest.classes],
            "sets": [(s.name, s.val, s.fingerprint) for s in manifest.sets],
            "tolerance_px": tolerance_px,
        },
        sort_keys=True,
    )
    cached = cache_dir / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json"
    if cached.is_file():
        try:
            return EvaluationSummary.model_validate(json.loads(cached.read_text()))
        except (ValueError, OSError):
            cached.unlink(missing_ok=True)  # a damaged entry is recomputed
    summary = evaluate_sets(checkpoint, manifest.load("val"), device="cpu", tolerance_px=tolerance_px)
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_json(cached, summary.to_json())
    return summary
