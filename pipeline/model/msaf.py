"""Multi-Scale Attention Fusion (MSAF), the fusion module of DSNet (IEEE TCSVT 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _bottleneck(channels: int, reduction: int) -> nn.Sequential:
    """1x1 conv C->C/r, BN, ReLU, 1x1 conv C/r->C, BN: the shape of every MSAF branch."""
    inner = max(1, channels // reduction)
    return nn.Sequential(
        nn.Conv2d(channels, inner, kernel_size=1),
        nn.BatchNorm2d(inner),
        nn.ReLU(inplace=True),
        nn.Conv2d(inner, channels, kernel_size=1),
        nn.BatchNorm2d(channels),
    )


class MSAF(nn.Module):
    """Fuse two same-shaped maps with attention weights built from several spatial scales.

    ``out = 2*x*w + 2*residual*(1-w)`` with ``w = sigmoid(local + global + sum_k context_k)``.
    Context branches pool ``x + residual`` to k x k grids, so a pixel's weight depends on the
    whole map: tiled inference must use one global tile grid.

    Args:
        channels: channel count C of both inputs.
        r: reduction of the bottleneck (C -> C/r -> C).
        grids: context grid sizes; ``(4, 8, 16)`` as in DSNet, ``(4, 8)`` the small variant.
    """

    def __init__(self, channels: int, r: int = 4, grids: Sequence[int] = (4, 8, 16)) -> None:
        super().__init__()
        if channels < 1 or r < 1:
            raise ValueError(f"MSAF needs channels >= 1 and r >= 1, got {channels=} {r=}")
        if any(int(k) < 1 for k in grids):
            raise ValueError(f"MSAF grid sizes must be >= 1, got {tuple(grids)}")
        self.channels = channels
        self.reduction = r
        self.grids = tuple(int(k) for k in grids)
        self.local_att = _bottleneck(channels, r)
        self.global_att = _bottleneck(channels, r)
        self.context_att = nn.ModuleList(_bottleneck(channels, r) for _ in self.grids)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Fuse the detail branch ``x`` with the context branch ``residual`` (same shape)."""
        if x.shape != residual.shape:
            raise ValueError(f"MSAF inputs differ in shape: {tuple(x.shape)} vs {tuple(residual.shape)}")
        height, width = x.shape[-2:]
        xa = x + residual
        logits = self.local_att(xa) + self.global_att(F.adaptive_avg_pool2d(xa, 1))
        for grid, branch in zip(self.grids, self.context_att, strict=False):
            pooled = branch(F.adaptive_avg_pool2d(xa, grid))
            logits = logits + F.interpolate(pooled, size=(height, width), mode="nearest")
        weight = torch.sigmoid(logits)
        return 2 * x * weight + 2 * residual * (1 - weight)
