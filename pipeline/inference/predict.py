"""Whole-image prediction for photos that fit in memory (evaluation, previews)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pipeline.inference.decision import Thresholds, decide


class Standardise:
    """The model's input scaling, defined once: (pixel 0..255 - mean) / std per channel, with the
    training images' statistics stored in the checkpoint. Training, whole-image prediction and the
    survey's tile runner all go through it, so the three cannot drift apart."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def in_place(self, batch: torch.Tensor) -> torch.Tensor:
        """Scale a float32 (N, 3, H, W) batch in place (the runner's reused input buffer)."""
        return batch.sub_(self.mean).div_(self.std)


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(N, H, W, 3) 0..255 -> (N, 3, H, W) standardised float32 on the images' device."""
    batch = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    return Standardise(mean, std, images.device).in_place(batch)


def autocast_for(device: torch.device, bf16: bool | None = None) -> torch.autocast:
    """bf16 autocast on CUDA, a disabled context (fp32) on a CPU; ``bf16`` overrides that (a survey's
    ``precision``: a CPU with native bf16 runs the network twice as fast in it)."""
    enabled = device.type == "cuda" if bf16 is None else bf16
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def predict_probabilities(
    model: torch.nn.Module, image: np.ndarray, mean: Sequence[float], std: Sequence[float], device: torch.device
) -> np.ndarray:
    """Class probabilities (C, H, W) float32 for one RGB uint8 image (H, W, 3)."""
    batch = torch.tensor(image, device=device).unsqueeze(0)
    with autocast_for(device):
        logits = model(normalise(batch, mean, std))
    return logits.float().softmax(dim=1)[0].cpu().numpy()


def predict_classes(
    model: torch.nn.Module,
    image: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    thresholds: Thresholds = (),
) -> np.ndarray:
    """Class ids (H, W) uint8 for one RGB uint8 image (argmax, or the calibrated thresholds)."""
    probs = torch.from_numpy(predict_probabilities(model, image, mean, std, device))
    return decide(probs, thresholds).numpy().astype(np.uint8)
