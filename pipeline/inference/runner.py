"""Batched tile inference with fixed-size batches and reused buffers.

Every forward pass has the same shape (the last batch is padded), so a tile's result never depends
on which other tiles share its batch, ``torch.compile`` never recompiles, and no buffer is
allocated per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pipeline.inference.predict import autocast_for


class TileRunner:
    """Turns uint8 RGB tiles (n, h, w, 3) into class probabilities (n, C, h, w) float32.

    Args:
        model: network in eval mode returning logits (N, C, H, W).
        mean, std: the training normalisation (0..255 scale).
        device: where the model runs.
        batch: forward-pass batch size; shorter batches are padded to it.
        tile_shape: (h, w) of every tile.
        tta: also run horizontally flipped tiles and average the probabilities.
        compile: wrap the model in ``torch.compile``.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], device: torch.device,
                 batch: int, tile_shape: tuple[int, int], *, tta: bool = False, compile: bool = False) -> None:
        self.device = device
        self.batch = batch
        self.tile_shape = tile_shape
        self.tta = tta
        cuda = device.type == "cuda"
        self.model = model.to(device).eval()
        if cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if compile else self.model
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.inv_std = 1.0 / torch.as_tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        h, w = tile_shape
        self._host = torch.zeros((batch, h, w, 3), dtype=torch.uint8, pin_memory=cuda)
        self._host_np = self._host.numpy()

    @torch.inference_mode()
    def _run_batch(self, count: int) -> torch.Tensor:
        x = self._host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = (x - self.mean) * self.inv_std
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(self.device):
            probs = self.forward(x).float().softmax(dim=1)
            if self.tta:
                probs = (probs + self.forward(x.flip(-1)).float().softmax(dim=1).flip(-1)) / 2
        return probs[:count]

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """Probabilities for ``tiles`` (n, h, w, 3) uint8, run in padded batches of ``batch``."""
        outputs = []
        for start in range(0, len(tiles), self.batch):
            chunk = tiles[start:start + self.batch]
            self._host_np[: len(chunk)] = chunk
            self._host_np[len(chunk):] = 0
            outputs.append(self._run_batch(len(chunk)).cpu().numpy())
        return np.concatenate(outputs) if outputs else np.empty((0,), np.float32)
