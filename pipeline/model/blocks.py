"""Convolutional building blocks of the DSNet-style network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(
    in_ch: int,
    out_ch: int,
    kernel: int = 1,
    *,
    dilation: int = 1,
    stride: int = 1,
    relu: bool = True,
    bias: bool = False,
) -> nn.Sequential:
    """Conv + BN (+ ReLU) with 'same' padding for odd kernels."""
    padding = dilation * (kernel - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, final_relu: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(in_ch, out_ch, 3, stride=stride),
            conv_bn(out_ch, out_ch, 3, relu=False),
        )
        self.shortcut = (
            conv_bn(in_ch, out_ch, 1, stride=stride, relu=False) if stride != 1 or in_ch != out_ch else nn.Identity()
        )
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum, then ReLU unless the caller applies it."""
        out = self.body(x) + self.shortcut(x)
        return F.relu(out) if self.final_relu else out


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (atrous) conv, 1x1 expand x2, residual; no ReLU at the end (as DSNet)."""

    expansion = 2

    def __init__(self, in_ch: int, mid_ch: int, *, dilation: int = 1) -> None:
        super().__init__()
        out_ch = mid_ch * self.expansion
        self.body = nn.Sequential(
            conv_bn(in_ch, mid_ch, 1),
            conv_bn(mid_ch, mid_ch, 3, dilation=dilation),
            conv_bn(mid_ch, out_ch, 1, relu=False),
        )
        self.shortcut = conv_bn(in_ch, out_ch, 1, relu=False) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck body plus shortcut (no final ReLU)."""
        return self.body(x) + self.shortcut(x)


def residual_stage(in_ch: int, out_ch: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """``blocks`` basic blocks; the last one leaves its ReLU to the caller (as DSNet does)."""
    return nn.Sequential(
        *(
            BasicBlock(
                in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, final_relu=i < blocks - 1 or blocks == 1
            )
            for i in range(blocks)
        )
    )


class AtrousChain(nn.ModuleList):
    """3x3 atrous convs applied one after another, every intermediate output kept.

    The one owner of the chained-dilation pattern MFACB and SPASPP share: each output sees a
    larger receptive field than the one before, and the caller fuses them all. A ModuleList, so
    the weights keep the names ``chain.<i>.*`` checkpoints were saved with.
    """

    def __init__(self, in_ch: int, mid_ch: int, dilations: Sequence[int]) -> None:
        super().__init__(conv_bn(in_ch if i == 0 else mid_ch, mid_ch, 3, dilation=d) for i, d in enumerate(dilations))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each atrous conv's output, in chain order."""
        outputs = []
        for conv in self:
            x = conv(x)
            outputs.append(x)
        return outputs


class MFACB(nn.Module):
    """Multi-scale Fusion Atrous Convolution Block: three chained atrous convs, concatenated.

    The chain grows the receptive field quickly while keeping 1/8 resolution; a 1x1
    shortcut of the input is added to the 1x1 fusion of the three outputs.
    """

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.chain = AtrousChain(in_ch, mid_ch, dilations)
        self.fuse = conv_bn(mid_ch * len(self.chain), out_ch, 1)
        self.shortcut = conv_bn(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused chain outputs plus the 1x1 shortcut."""
        return self.fuse(torch.cat(self.chain(x), dim=1)) + self.shortcut(x)


class SPASPP(nn.Module):
    """Serial-parallel atrous pyramid: chained atrous convs + image pooling, fused, 3x3 refine."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, dilations: Sequence[int] = (6, 12, 18, 24)) -> None:
        super().__init__()
        self.chain = AtrousChain(in_ch, mid_ch, dilations)
        self.pool = conv_bn(in_ch, mid_ch, 1)
        self.fuse = conv_bn(mid_ch * (len(self.chain) + 1), out_ch, 1)
        self.shortcut = conv_bn(in_ch, out_ch, 1)
        self.refine = conv_bn(out_ch, out_ch, 3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Chain outputs and pooled context, fused, plus shortcut, refined."""
        outputs = self.chain(x)
        pooled = self.pool(F.adaptive_avg_pool2d(x, 1))
        outputs.append(pooled.expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.refine(self.fuse(torch.cat(outputs, dim=1)) + self.shortcut(x))


class SegHead(nn.Module):
    """(BN,) ReLU, 3x3 conv, BN, ReLU, 1x1 conv to class logits."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int, *, input_bn: bool) -> None:
        super().__init__()
        pre: list[nn.Module] = [nn.BatchNorm2d(in_ch)] if input_bn else []
        self.body = nn.Sequential(
            *pre,
            nn.ReLU(),
            nn.Conv2d(in_ch, mid_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits at the input's resolution."""
        return self.body(x)


class FullResRefiner(nn.Module):
    """Refines the decoder's 1/4-resolution logits with features of the full-resolution image.

    The decoder sees the image at 1/4 scale, so its bilinearly upsampled logits draw a 1-px crack
    2-4 px wide. This branch reads the image at full and half resolution (two light convs) and
    predicts a residual correction of the upsampled logits; its output conv starts at zero, so a
    network without it (or a checkpoint trained without it) gives the same answer until it learns.
    """

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.full_res = conv_bn(3, width, 3)
        self.half_res = conv_bn(width, 2 * width, 3, stride=2)
        self.fuse = conv_bn(num_classes + 3 * width, 2 * width, 3)
        self.out = nn.Conv2d(2 * width, num_classes, 1)

    def zero_output(self) -> None:
        """Start as the identity: the refined logits equal the upsampled ones."""
        nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    def forward(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Logits at the image's size: upsampled coarse logits + a full-resolution correction."""
        size = image.shape[-2:]
        full = self.full_res(image)
        half = F.interpolate(self.half_res(full), size=size, mode="bilinear", align_corners=False)
        up = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        return up + self.out(self.fuse(torch.cat((up, full, half), dim=1)))
