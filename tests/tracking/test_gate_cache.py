"""The champion is scored once per (checkpoint, validation split, tolerance), not at every register."""

import json

import pytest

from pipeline.config import load_params
from pipeline.data.manifest import build_manifest
from pipeline.tracking.gate import champion_evaluation
from tests.conftest import write_params


def test_the_champion_evaluation_is_computed_once_per_model_split_and_tolerance(tmp_path, cfd_dir, tiny_model):
    params = write_params(tmp_path / "params.yaml", cfd_dir / "images", cfd_dir / "masks", data={"val_fraction": 0.1})
    manifest = build_manifest(load_params(params).data)
    cache = tmp_path / "cache"
    first = champion_evaluation(tiny_model, manifest, 2, cache)
    assert first.images == len(manifest.sets[0].val) > 0 and 0 <= first.score <= 1
    (entry,) = cache.glob("*.json")
    stored = json.loads(entry.read_text())
    entry.write_text(json.dumps(stored | {"score": 0.123}))  # marked: a second call must read it, not recompute
    assert champion_evaluation(tiny_model, manifest, 2, cache).score == pytest.approx(0.123)
    other = champion_evaluation(tiny_model, manifest, 1, cache)  # another tolerance: its own entry
    assert other.tolerance_px == 1 and len(list(cache.glob("*.json"))) == 2
    entry.write_text("{broken")  # a damaged entry is recomputed, not an error
    assert champion_evaluation(tiny_model, manifest, 2, cache).score == pytest.approx(first.score)


def test_a_cached_result_is_computed_once_per_key_and_an_undefined_survey_score_reads_back(tmp_path):
    """The one cache behind the champion's evaluation and its survey scores. A set whose mosaic
    holds no crack scores NaN, which the JSON file stores as null: it must read back as NaN (the
    first survey cache turned it into a TypeError on the second register)."""
    import math

    from pipeline.fsutil import cached_json
    from pipeline.tracking.gate import scores_from_json

    calls = []

    def compute() -> dict[str, float]:
        calls.append(1)
        return {"crackforest": 0.9, "masonry": math.nan}

    def cached(key: dict) -> dict[str, float]:
        return cached_json(tmp_path, key, compute, lambda scores: scores, scores_from_json)

    first = cached({"checkpoint": "a", "survey_size": 1024})
    again = cached({"checkpoint": "a", "survey_size": 1024})
    assert len(calls) == 1 and again["crackforest"] == 0.9 and math.isnan(again["masonry"])
    assert math.isnan(first["masonry"])
    cached({"checkpoint": "a", "survey_size": 512})  # another key: its own entry
    assert len(calls) == 2 and len(list(tmp_path.glob("*.json"))) == 2
    for entry in tmp_path.glob("*.json"):
        entry.write_text("[1, 2")  # damaged: computed again, not an error
    assert cached({"checkpoint": "a", "survey_size": 1024})["crackforest"] == 0.9 and len(calls) == 3
