"""Training that survives a stop (SIGKILL mid-epoch) and fine-tuning from existing weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import load_params
from pipeline.errors import MsafError
from pipeline.training.state import TENSORS, state_dir_for
from pipeline.training.trainer import train_model
from tests.conftest import REPO, assert_one_line_error, run_msaf, write_params

pytestmark = pytest.mark.slow

TRAIN = {"epochs": 2, "steps_per_epoch": 6, "batch_size": 2, "crop_size": 64, "ema_decay": 0.9}


def tiny_params(root: Path, cfd_subset: Path, **train) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return write_params(root / "params.yaml", cfd_subset / "images", cfd_subset / "masks", train={**TRAIN, **train})


def train_in_process(params: Path, kill_at_step: int | None = None) -> subprocess.Popen:
    """`train_model` in a process of its own: the killed, resumed and reference runs share one
    environment (thread count, env), whatever earlier tests did to this one; prints each epoch.

    With ``kill_at_step`` the process SIGKILLs itself when it draws that step's batch: a real kill
    at a known point mid-epoch (polling the state file from outside raced a fast training)."""
    script = (
        "from pipeline.config import load_params; import pipeline.training.trainer as t\n"
        f"kill_at = {kill_at_step!r}\n"
        "draw = t.training_batches\n"
        "def batches(*args, start=0, **kwargs):\n"
        "    for step, batch in enumerate(draw(*args, start=start, **kwargs), start):\n"
        "        if step == kill_at:\n"
        "            import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"
        "        yield batch\n"
        "t.training_batches = batches\n"
        f"t.train_model(load_params({str(params)!r}), on_epoch=lambda r: print('epoch', r.epoch, flush=True))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "SOURCE_DATE_EPOCH": "0"}  # created_utc: the one clock value
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)


def test_killed_training_resumes_to_byte_identical_weights(tmp_path, cfd_subset):
    params = tiny_params(tmp_path, cfd_subset, state_steps=3)
    out = load_params(params).train.out
    reference = train_in_process(params)
    assert reference.communicate(timeout=300)[0].split() == ["epoch", "1", "epoch", "2"]
    uninterrupted = out.read_bytes()
    assert not state_dir_for(out).exists()  # a finished training leaves no state behind
    out.unlink()

    state = state_dir_for(out) / TENSORS
    # Saved every 3 steps: the kill while drawing step 10 (epoch 2, after the first validation)
    # loses step 9's work, which the resumed run redoes from the state of step 9.
    process = train_in_process(params, kill_at_step=10)
    printed = process.communicate(timeout=300)[0].split()
    assert process.returncode == -signal.SIGKILL
    assert printed == ["epoch", "1"]
    with open(state, "rb") as fh:
        header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    assert json.loads(header["__metadata__"]["msaf_train_state"])["step"] == 9
    assert not out.exists()

    resumed = train_in_process(params)
    # epoch 1 is not trained (or reported) again: the run continues from its state
    assert resumed.communicate(timeout=300)[0].split() == ["epoch", "2"]
    assert out.read_bytes() == uninterrupted


def test_state_of_other_params_is_not_reused(tmp_path, cfd_subset, monkeypatch):
    import pipeline.training.trainer as trainer

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")

    params = load_params(tiny_params(tmp_path, cfd_subset, epochs=1))
    reference = train_model(params).checkpoint.read_bytes()
    # A training with another learning rate leaves its state where this one keeps its own.
    other = load_params(tiny_params(tmp_path / "other", cfd_subset, epochs=1, lr=0.01, state_steps=3))
    with monkeypatch.context() as patch:
        patch.setattr(trainer, "discard_state", lambda folder: None)
        train_model(other, state_dir=state_dir_for(params.train.out))
    assert (state_dir_for(params.train.out) / TENSORS).is_file()
    assert train_model(params).checkpoint.read_bytes() == reference


def test_init_copies_matching_tensors_and_starts_new_ones_fresh(tmp_path, cfd_subset, tiny_model):
    from pipeline.model import build_model
    from pipeline.training.init import load_initial_weights

    source = load_file(str(tiny_model))
    refined = build_model("dsnet-tiny", 2, refine_width=4)
    before = {k: v.clone() for k, v in refined.state_dict().items()}
    report = load_initial_weights(refined, tiny_model)
    after = refined.state_dict()
    assert report.fresh and all(name.startswith("refine.") for name in report.fresh)
    assert report.loaded == len(source)
    for name, value in after.items():
        if name in report.fresh:
            assert torch.equal(value, before[name])
        else:
            assert torch.equal(value, source[name].to(value.dtype)), name
    # The refinement branch starts as the identity: the network answers as the source model did.
    from pipeline.checkpoint import load_checkpoint

    plain, _ = load_checkpoint(tiny_model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(refined.eval()(x), plain(x), atol=1e-5)

    # Fine-tuning through params: train.init names the checkpoint; one step of training keeps the
    # source's normalisation and moves the weights away from the source's (it really trained).
    params = load_params(tiny_params(tmp_path, cfd_subset, epochs=1, steps_per_epoch=2, init=str(tiny_model)))
    result = train_model(params)
    from pipeline.checkpoint import read_metadata

    assert result.metadata.mean == read_metadata(tiny_model).mean
    tuned = load_file(str(result.checkpoint))
    assert not torch.equal(tuned["head.body.2.weight"], source["head.body.2.weight"])
    fresh = load_params(tiny_params(tmp_path / "fresh", cfd_subset, epochs=1, steps_per_epoch=2))
    scratch = load_file(str(train_model(fresh).checkpoint))
    # From the source, the weights stay near it; from scratch they are far from it.
    near = (tuned["head.body.2.weight"] - source["head.body.2.weight"]).abs().mean()
    far = (scratch["head.body.2.weight"] - source["head.body.2.weight"]).abs().mean()
    assert near < far / 3, (near, far)


def test_init_that_is_not_a_model_is_one_line(tmp_path, cfd_subset):
    params = tiny_params(tmp_path, cfd_subset, init=str(tmp_path / "missing.safetensors"))
    result = run_msaf("train", "--params", str(params), "--no-track", cwd=tmp_path)
    assert_one_line_error(result, "train.init: no model file at", "missing.safetensors")


def test_init_matches_classes_by_name_and_a_new_class_starts_fresh(tiny_model):
    """From a background/crack model to background/joint/crack: crack keeps its weights in its new
    place, joint gets a fresh output channel, every other tensor is copied."""
    from pipeline.model import build_model
    from pipeline.training.init import class_slots, load_initial_weights

    source = load_file(str(tiny_model))
    torch.manual_seed(1)
    network = build_model("dsnet-tiny", 3, refine_width=4)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    report = load_initial_weights(network, tiny_model, ["background", "joint", "crack"])
    after = network.state_dict()
    heads = [name for name, dim in class_slots(network).items() if dim == 0 and name in source]
    assert len(heads) == 6  # main and two auxiliary heads, weight and bias
    for name in heads:
        assert torch.equal(after[name][0], source[name][0].to(after[name].dtype))  # background
        assert torch.equal(after[name][2], source[name][1].to(after[name].dtype))  # crack, moved
        assert torch.equal(after[name][1], before[name][1])  # joint: fresh
        assert name in report.fresh
    untouched = [n for n in source if n not in class_slots(network)]
    assert all(torch.equal(after[n], source[n].to(after[n].dtype)) for n in untouched)
    assert all(n.startswith("refine.") for n in report.fresh if n not in heads)  # the new branch alone


def test_trainable_trains_only_the_named_part_and_leaves_the_rest_bit_for_bit(tmp_path, cfd_subset, tiny_model):
    """``train.trainable: [refine]``: the full-resolution branch learns on a frozen network. Every
    other tensor of the saved model (weights, BatchNorm statistics, through the EMA too) is the
    init's exactly; the branch moved. A name no parameter has is one line."""
    params = load_params(
        write_params(
            tmp_path / "params.yaml",
            cfd_subset / "images",
            cfd_subset / "masks",
            model={"preset": "dsnet-tiny", "overrides": {"refine_width": 4}},
            train={**TRAIN, "epochs": 1, "steps_per_epoch": 3, "init": str(tiny_model), "trainable": ["refine"]},
        )
    )
    source = load_file(str(tiny_model))
    tuned = load_file(str(train_model(params).checkpoint))
    assert set(tuned) - set(source) and all(name.startswith("refine.") for name in set(tuned) - set(source))
    for name, value in source.items():
        assert torch.equal(tuned[name], value.to(tuned[name].dtype)), name
    assert tuned["refine.out.weight"].abs().sum() > 0  # it started at zero and learnt

    wrong = params.model_copy(update={"train": params.train.model_copy(update={"trainable": ["refiner"]})})
    with pytest.raises(MsafError, match="no parameter of this network is named refiner"):
        train_model(wrong)


def test_seeding_asks_for_deterministic_kernels_without_loading_the_compiler():
    """The determinism the byte-identical resume above rests on, set without importing torch's
    compiler (1.8 s of every training's start); where the compiler is loaded, its flag is set too."""
    script = (
        "import sys, torch\n"
        "from pipeline.training.trainer import seed_everything\n"
        "seed_everything(0)\n"
        "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
        " 'torch._inductor' in sys.modules)\n"
        "import torch._inductor.config as inductor\n"
        "inductor.deterministic = False\n"
        "seed_everything(0)\n"
        "print(inductor.deterministic)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True", "False", "True"]
