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
