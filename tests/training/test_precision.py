"""``train.precision``: bf16 autocast on a CPU with native bf16 trains the same way, faster; fp32 stays
the default on a CPU, and the choice is recorded in the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file

import pipeline.inference.device as device_module
from pipeline.checkpoint import METADATA_KEY
from pipeline.config import load_params
from pipeline.errors import MsafError
from pipeline.training.trainer import train_model
from tests.conftest import write_params

pytestmark = pytest.mark.slow

TRAIN = {"epochs": 2, "steps_per_epoch": 4, "batch_size": 2, "crop_size": 64, "device": "cpu"}


def _train(root, cfd_subset, **train):
    root.mkdir()
    params = write_params(root / "params.yaml", cfd_subset / "images", cfd_subset / "masks", train=TRAIN | train)
    return train_model(load_params(params))


def test_a_bf16_training_follows_the_fp32_one_and_records_its_precision(tmp_path, cfd_subset, monkeypatch):
    """Run for real (emulated where the CPU has no native bf16: slower, the same arithmetic): the same
    seed and batches give the same losses to within bf16's rounding, not bit for bit."""
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    fp32 = _train(tmp_path / "fp32", cfd_subset)
    bf16 = _train(tmp_path / "bf16", cfd_subset, precision="bf16")
    fp32_losses = np.array([r.loss for r in fp32.history])
    bf16_losses = np.array([r.loss for r in bf16.history])
    assert np.isfinite(bf16_losses).all() and not np.array_equal(fp32_losses, bf16_losses)
    np.testing.assert_allclose(bf16_losses, fp32_losses, rtol=0.05)
    weights = load_file(str(bf16.checkpoint))
    assert all(t.isfinite().all() for t in weights.values() if t.dtype.is_floating_point)
    with safe_open(str(bf16.checkpoint), framework="pt") as fh:
        recorded = json.loads(fh.metadata()[METADATA_KEY])["params"]["train"]
    assert recorded["precision"] == "bf16"


def test_bf16_training_on_a_cpu_without_native_bf16_is_one_line(tmp_path, cfd_subset, monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(MsafError, match="no native bf16"):
        _train(tmp_path / "run", cfd_subset, precision="bf16")
