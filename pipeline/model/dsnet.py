"""DSNet-style segmentation network: atrous context branch + detail branch fused by MSAF."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.blocks import MFACB, SPASPP, Bottleneck, FullResRefiner, SegHead, conv_bn, residual_stage
from pipeline.model.msaf import MSAF
from pipeline.model.presets import DSNetConfig


class DSNet(nn.Module):
    """DSNet-style network; output logits have the input's H x W.

    In training mode ``forward`` returns ``(main, aux_stage3, aux_stage4)``; in eval mode the main
    logits only, so inference code never pays for the auxiliary heads.
    """

    def __init__(self, config: DSNetConfig) -> None:
        super().__init__()
        self.config = config
        p = config.width
        self.stem = nn.Sequential(conv_bn(3, p, 3, stride=2, bias=True), conv_bn(p, p, 3, stride=2, bias=True))
        self.layer1 = residual_stage(p, p, config.stem_blocks)
        self.skip = residual_stage(p, p, 1)
        self.layer2 = residual_stage(p, 2 * p, config.stem_blocks, stride=2)

        self.context3 = nn.Sequential(
            MFACB(2 * p, 2 * p, 4 * p, (2, 2, 2)),
            MFACB(4 * p, 4 * p, 4 * p, (2, 2, 2)),
            MFACB(4 * p, 4 * p, 4 * p, (3, 3, 3)),
        )
        self.context4 = nn.Sequential(
            MFACB(4 * p, 4 * p, 8 * p, (3, 3, 3)),
            *(MFACB(8 * p, 8 * p, 8 * p, (5, 5, 5)) for _ in range(config.context_blocks - 1)),
        )
        self.context5 = Bottleneck(8 * p, 4 * p, dilation=5)

        self.detail3 = residual_stage(2 * p, 4 * p, config.detail_blocks)
        self.detail4 = residual_stage(4 * p, 4 * p, config.detail_blocks)
        self.detail5 = Bottleneck(4 * p, 2 * p)

        self.compress3 = conv_bn(4 * p, 4 * p, 1, relu=False)
        self.compress4 = conv_bn(8 * p, 4 * p, 1, relu=False)
        self.compress5 = conv_bn(8 * p, 4 * p, 1, relu=False)
        self.fuse3, self.fuse4, self.fuse5 = (
            MSAF(4 * p, r=config.msaf_reduction, grids=config.grids) for _ in range(3)
        )

        self.spaspp = SPASPP(4 * p, 4 * p, 4 * p)
        self.up = conv_bn(4 * p, config.head_width, 3, relu=False)
        self.head = SegHead(config.head_width + p, config.head_width, config.num_classes, input_bn=False)
        self.aux_head3 = SegHead(4 * p, 4 * p, config.num_classes, input_bn=True)
        self.aux_head4 = SegHead(4 * p, p, config.num_classes, input_bn=True)
        self.refine = FullResRefiner(config.refine_width, config.num_classes) if config.refine_width else None
        self._init_weights()
        if self.refine is not None:
            self.refine.zero_output()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits at the image's size; in training also the two auxiliary heads' logits."""
        size = image.shape[-2:]
        x = self.layer1(self.stem(image))
        skip = self.skip(x)
        x = F.relu(self.layer2(F.relu(x)))

        detail = self.fuse3(self.detail3(x), self.compress3(ctx := self.context3(x)))
        aux3 = detail
        ctx = self.context4(ctx)
        detail = self.fuse4(self.detail4(F.relu(detail)), self.compress4(ctx))
        aux4 = detail
        ctx = F.relu(self.context5(ctx))
        detail = self.fuse5(self.detail5(F.relu(detail)), self.compress5(ctx))

        out = self.up(self.spaspp(F.relu(detail)))
        out = F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        out = self.head(torch.cat((out, skip), dim=1))
        if self.refine is not None:
            out = self.refine(image, out)
        else:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        if not self.training:
            return out
        aux = [
            F.interpolate(head(feat), size=size, mode="bilinear", align_corners=False)
            for head, feat in ((self.aux_head3, aux3), (self.aux_head4, aux4))
        ]
        return out, aux[0], aux[1]


def count_parameters(model: nn.Module, *, include_aux: bool = True) -> int:
    """Trainable parameter count, optionally leaving out the training-only auxiliary heads."""
    return sum(
        t.numel()
        for name, t in model.named_parameters()
        if include_aux or not name.startswith(("aux_head3.", "aux_head4."))
    )
