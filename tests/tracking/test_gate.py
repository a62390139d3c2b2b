"""The champion gate: both models scored on the same data; a guarded set may not regress."""

from __future__ import annotations

import math

from pipeline.metrics.summary import EvaluationSummary, MetricsSummary
from pipeline.tracking.gate import judge


def summary(**scores: float) -> EvaluationSummary:
    """An evaluation with these per-set scores and their mean as the headline score."""
    sets = {name: MetricsSummary.model_construct(score=value) for name, value in scores.items()}
    return EvaluationSummary.model_construct(sets=sets, score=sum(scores.values()) / len(scores))


def test_a_candidate_better_on_average_but_worse_on_a_public_set_is_refused_naming_it():
    champion = summary(crackforest=0.862, uav75=0.666, masonry=0.224)
    candidate = summary(crackforest=0.828, uav75=0.639, masonry=0.763)  # mean 0.743 > 0.584
    verdict = judge(candidate, champion, None, 0.01)
    assert not verdict.promoted
    assert verdict.reason == "regresses on crackforest (0.828 < 0.862 - 0.01), uav75 (0.639 < 0.666 - 0.01)"
    assert verdict.per_set["masonry"] == (0.763, 0.224)
    # guarding only the user's own set lets the same candidate through
    assert judge(candidate, champion, ["masonry"], 0.01).promoted


def test_within_the_tolerance_and_better_overall_is_promoted_worse_overall_is_not():
    champion = summary(crackforest=0.862, uav75=0.666, site=0.40)
    assert judge(summary(crackforest=0.855, uav75=0.670, site=0.60), champion, None, 0.01).promoted
    stalled = judge(summary(crackforest=0.860, uav75=0.660, site=0.39), champion, None, 0.01)
    assert not stalled.promoted and stalled.reason.startswith("score 0.6367 below the champion's 0.6427")
    first = judge(summary(site=0.5), None, None, 0.01)
    assert first.promoted and first.reason == "no champion yet" and first.per_set == {"site": (0.5, None)}
    # an undefined score is never a regression, nor better than a champion
    undefined = judge(summary(a=math.nan, b=0.9), summary(a=0.5, b=0.8), None, 0.01)
    assert not undefined.promoted and undefined.reason.startswith("score nan below")
