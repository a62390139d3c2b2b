"""A frozen teacher for learning without forgetting: fine-tuning on a new set while keeping the old ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.checkpoint import file_sha256, load_checkpoint
from pipeline.class_ids import NO_CLASS
from pipeline.config import DistillConfig
from pipeline.errors import MsafError
from pipeline.inference.predict import autocast_for, averaged_probabilities, normalise
from pipeline.inference.scales import SINGLE
from pipeline.training.init import resolve_init
from pipeline.training.loss import distillation_loss


def resolve_teacher(cfg: DistillConfig, init: Path | None, registry_name: str, registry_alias: str) -> Path | None:
    """The teacher's checkpoint: ``init`` means the weights the training starts from; None when off."""
    if not cfg.weight:
        return None
    if cfg.teacher == "init":
        if init is None:
            raise MsafError("train.distill.teacher is `init` but train.init is `none`: name a teacher checkpoint")
        return init
    teacher = resolve_init(cfg.teacher, registry_name, registry_alias)
    if teacher is None:
        raise MsafError("train.distill.teacher is `none` while train.distill.weight > 0: name a teacher or set 0")
    return teacher


@dataclass
class Teacher:
    """The teacher network (eval mode, no gradients), its own input scaling and what it teaches on."""

    model: torch.nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sha256: str
    cfg: DistillConfig
    exposure_floor: float = 0.0

    @classmethod
    def load(cls, path: Path, cfg: DistillConfig, class_names: list[str], device: torch.device) -> Teacher:
        """Load the teacher; its classes must be the training's, in the same order."""
        model, metadata = load_checkpoint(path, device)
        if metadata.class_names != class_names:
            raise MsafError(
                f"train.distill.teacher {path}: its classes {metadata.class_names} differ from data.classes "
                f"{class_names}; distil from a model of the same classes"
            )
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return cls(model, tuple(metadata.mean), tuple(metadata.std), file_sha256(path), cfg, metadata.exposure_floor)

    def taught(self, sources: list[str]) -> np.ndarray:
        """(N,) bool: the crops whose data set is distilled."""
        return np.array([not self.cfg.sets or name in self.cfg.sets for name in sources])

    def loss(
        self,
        images: torch.Tensor,
        student: torch.Tensor,
        labels: torch.Tensor,
        sources: list[str],
        bf16: bool | None = None,
    ) -> torch.Tensor:
        """The weighted distillation term of one batch: raw images (N, H, W, 3) 0..255, the student's
        main logits, the labels (ignored pixels are not distilled either) and each crop's data set;
        ``bf16``: the teacher's arithmetic, the student's (None: the device's default)."""
        chosen = torch.from_numpy(self.taught(sources)).to(student.device)
        if not bool(chosen.any()):
            return student.sum() * 0.0
        with torch.no_grad(), autocast_for(student.device, bf16):
            inputs = normalise(images[chosen], self.mean, self.std, self.exposure_floor)
            if self.cfg.scales == SINGLE:
                teacher = self.model(inputs).float()
            else:  # the mean of its views as log-probabilities: logits whose softmax is that mean
                teacher = averaged_probabilities(self.model, inputs, self.cfg.scales).clamp_min(1e-12).log()
        valid = labels[chosen] != NO_CLASS
        return self.cfg.weight * distillation_loss(student[chosen], teacher, valid, self.cfg.temperature)
