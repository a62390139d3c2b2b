"""Learning without forgetting: the distillation term, its teacher and what it does to a fine-tune."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.checkpoint import load_checkpoint
from pipeline.config import DistillConfig, load_params
from pipeline.errors import MsafError
from pipeline.inference.predict import normalise
from pipeline.training.distill import Teacher, resolve_teacher
from pipeline.training.loss import distillation_loss
from pipeline.training.state import resume_key
from pipeline.training.trainer import load_training_data, train_model
from tests.conftest import write_params


def test_distillation_loss_is_the_teachers_kl_over_valid_pixels():
    teacher = torch.zeros(1, 2, 1, 2)  # p = (0.5, 0.5) at both pixels
    student = torch.zeros(1, 2, 1, 2)
    student[0, 0, 0, 0] = math.log(3)  # p = (0.75, 0.25) at the first pixel
    both = torch.ones(1, 1, 2, dtype=torch.bool)
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert distillation_loss(student, teacher, both).item() == pytest.approx(kl / 2, rel=1e-6)
    first = torch.tensor([[[True, False]]])
    assert distillation_loss(student, teacher, first).item() == pytest.approx(kl, rel=1e-6)
    assert distillation_loss(student, teacher, ~first).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_loss(student, teacher, ~both).item() == 0.0
    # T^2 scaling: at T = 2 the logits halve, the KL of the softer pair is scaled back by 4.
    soft = 0.5 * math.log(0.5 / (math.sqrt(3) / (1 + math.sqrt(3)))) + 0.5 * math.log(0.5 * (1 + math.sqrt(3)))
    assert distillation_loss(student, teacher, first, temperature=2).item() == pytest.approx(4 * soft, rel=1e-6)


def test_a_teacher_with_two_views_teaches_the_mean_of_its_views():
    """``distill.scales``: the student is pulled towards the probabilities a multi-scale survey would
    average (the views of pipeline.inference.predict), at the temperature's T² scale as before."""
    from pipeline.inference.predict import averaged_probabilities

    torch.manual_seed(0)
    network = torch.nn.Conv2d(3, 2, 3, padding=1).eval()
    images = torch.randint(0, 256, (2, 16, 20, 3), dtype=torch.uint8)
    labels = torch.zeros(2, 16, 20, dtype=torch.long)
    student = torch.randn(2, 2, 16, 20)
    mean, std = (120.0, 110.0, 100.0), (40.0, 40.0, 40.0)
    for scales, temperature in (((1.0,), 1.0), ((1.0, 2.0), 1.0), ((1.0, 2.0), 2.0)):
        cfg = DistillConfig(weight=0.5, scales=scales, temperature=temperature)
        teacher = Teacher(network, mean, std, "sha", cfg)
        with torch.no_grad():
            probs = averaged_probabilities(network, normalise(images, mean, std), scales)
        expected = 0.5 * distillation_loss(student, probs.log(), labels != 255, temperature)
        got = teacher.loss(images, student, labels, ["a", "b"], bf16=False)
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    single = Teacher(network, mean, std, "sha", DistillConfig(weight=1)).loss(images, student, labels, ["a", "b"])
    two = Teacher(network, mean, std, "sha", DistillConfig(weight=1, scales=(1, 2))).loss(
        images, student, labels, ["a", "b"]
    )
    assert abs(single.item() - two.item()) > 1e-3  # the second view changes what is taught


@pytest.mark.slow  # the session's tiny model is trained first
def test_teacher_is_init_or_named_and_teaches_only_its_sets(tiny_model, tmp_path):
    off = DistillConfig()
    assert resolve_teacher(off, None, "r", "champion") is None
    assert resolve_teacher(DistillConfig(weight=1), tiny_model, "r", "champion") == tiny_model
    with pytest.raises(MsafError, match=r"train\.init is `none`"):
        resolve_teacher(DistillConfig(weight=1), None, "r", "champion")
    with pytest.raises(MsafError, match="no model file"):
        resolve_teacher(DistillConfig(weight=1, teacher=str(tmp_path / "nope.safetensors")), None, "r", "champion")
    teacher = Teacher.load(
        tiny_model, DistillConfig(weight=1, sets=["uav"]), ["background", "crack"], torch.device("cpu")
    )
    assert teacher.taught(["cfd", "uav", "uav"]).tolist() == [False, True, True]
    assert not any(p.requires_grad for p in teacher.model.parameters())
    with pytest.raises(MsafError, match=r"differ from data\.classes"):
        Teacher.load(tiny_model, DistillConfig(weight=1), ["background", "crack", "joint"], torch.device("cpu"))


def _kl_to(teacher_path, student_path, images: np.ndarray) -> float:
    """Mean per-pixel KL(teacher || student) of two checkpoints on the same images."""
    teacher, meta = load_checkpoint(teacher_path)
    student, _ = load_checkpoint(student_path)
    x = normalise(torch.from_numpy(images), meta.mean, meta.std)
    with torch.no_grad():
        return distillation_loss(student(x), teacher(x), torch.ones(x.shape[0], *x.shape[2:], dtype=torch.bool)).item()


@pytest.mark.slow
def test_a_distilled_fine_tune_stays_near_its_teacher(tmp_path, cfd_subset, tiny_model):
    """A fine-tune at a high learning rate drifts from the model it started from; the same fine-tune
    with the distillation term stays several times nearer to it (fails if the teacher is ignored)."""
    train = {"epochs": 1, "steps_per_epoch": 4, "batch_size": 4, "crop_size": 64, "lr": 0.02, "init": str(tiny_model)}
    runs = {}
    for name, distill in (("plain", {}), ("distilled", {"weight": 20.0})):
        root = tmp_path / name
        root.mkdir()
        path = write_params(
            root / "params.yaml", cfd_subset / "images", cfd_subset / "masks", train={**train, "distill": distill}
        )
        runs[name] = load_params(path)
        runs[name] = (runs[name], train_model(runs[name]).checkpoint)
    images = np.stack(
        [
            np.asarray(Image.open(p).convert("RGB"))[:128, :128]
            for p in sorted((cfd_subset / "images").glob("*.jpg"))[:4]
        ]
    )
    plain = _kl_to(tiny_model, runs["plain"][1], images.astype(np.float32))
    distilled = _kl_to(tiny_model, runs["distilled"][1], images.astype(np.float32))
    assert distilled < plain / 3, (distilled, plain)
    # The teacher is part of what the training's state belongs to: another teacher, another state.
    params = runs["distilled"][0]
    fingerprint = load_training_data(params).fingerprint
    assert resume_key(params, fingerprint, "a", "t1") != resume_key(params, fingerprint, "a", "t2")
