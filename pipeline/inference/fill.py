"""Fill a tile's nodata pixels by push-pull interpolation from its own valid pixels.

Orthomosaics have irregular footprints. Filling nodata with one flat colour (the training mean)
leaves a sharp step along the footprint edge, which a crack model reads as a crack: on a composed
orthomosaic the shipped model called ~3,800 pixels within 8 px of the edge "crack" where there
were 600. Push-pull (average the valid pixels down a pyramid, then pull the averages back up into
the holes) continues the surface smoothly, so the edge has no step. It is computed per tile from
the tile alone, so a tile's input, and the mask, do not depend on the block size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def push_pull(image: torch.Tensor, valid: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """``image`` (3, H, W) float with its nodata pixels (``valid`` False) filled; ``fallback`` (3,)
    is used when the tile has no valid pixel at all."""
    if bool(valid.all()):
        return image
    if not bool(valid.any()):
        return fallback.view(3, 1, 1).expand_as(image).clone()
    weight = valid.to(image.dtype)[None, None]
    values = (image * weight[0])[None]
    pyramid = []
    while bool((weight == 0).any()) and min(weight.shape[-2:]) > 1:
        pyramid.append((values, weight))
        weight_sum = F.avg_pool2d(weight, 2, ceil_mode=True)
        values = F.avg_pool2d(values, 2, ceil_mode=True)
        weight = weight_sum
    # normalised colour at the coarsest level, then pulled up level by level into the holes
    colour = values / weight.clamp_min(1e-12)
    if bool((weight == 0).any()):
        mean = (values.sum(dim=(-2, -1)) / weight.sum(dim=(-2, -1)).clamp_min(1e-12))[..., None, None]
        colour = torch.where(weight > 0, colour, mean)
    for values_up, weight_up in reversed(pyramid):
        coarse = F.interpolate(colour, size=values_up.shape[-2:], mode="bilinear", align_corners=False)
        colour = torch.where(weight_up > 0, values_up / weight_up.clamp_min(1e-12), coarse)
    return torch.where(valid[None], image, colour[0])
