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


def test_a_candidate_that_passes_on_the_photos_but_regresses_through_the_survey_is_refused():
    """Piece 5 against release-1: better on every set's validation photos, but 0.017 and 0.029 worse
    on crackforest and UAV75 through a stitched survey (measured, README)."""
    champion = summary(crackforest=0.862, uav75=0.666, masonry=0.224)
    candidate = summary(crackforest=0.870, uav75=0.675, masonry=0.755)
    champion_survey = {"crackforest": 0.856, "uav75": 0.656, "masonry": 0.104}
    candidate_survey = {"crackforest": 0.839, "uav75": 0.627, "masonry": 0.721}
    assert judge(candidate, champion, None, 0.01).promoted  # the photos alone let it through
    verdict = judge(candidate, champion, None, 0.01, candidate_survey, champion_survey)
    assert not verdict.promoted
    assert verdict.reason == (
        "regresses on crackforest (0.839 < 0.856 - 0.01) through the survey, "
        "uav75 (0.627 < 0.656 - 0.01) through the survey"
    )
    assert verdict.survey["masonry"] == (0.721, 0.104)
    # within the tolerance through the survey as well: promoted, the survey scores kept with the verdict
    close = {"crackforest": 0.850, "uav75": 0.650, "masonry": 0.721}
    passed = judge(candidate, champion, None, 0.01, close, champion_survey)
    assert passed.promoted and passed.survey["uav75"] == (0.650, 0.656)
