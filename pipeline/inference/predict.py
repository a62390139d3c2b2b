"""Whole-image prediction for photos that fit in memory (evaluation, previews)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.inference.decision import Thresholds, decide
from pipeline.inference.scales import SINGLE, Scales, view_shape
from pipeline.raster.luminance import LUMA


class Standardise:
    """The model's input scaling, defined once: (pixel 0..255 - mean) / std per channel, with the
    training images' statistics stored in the checkpoint, after lifting images darker than the
    model's exposure floor (``lift_shadows``). Training, whole-image prediction and the survey's
    tile runner all go through it, so the three cannot drift apart."""

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], device: torch.device, exposure_floor: float = 0.0
    ) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.exposure_floor = exposure_floor
        self.luma = torch.as_tensor(LUMA, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def in_place(self, batch: torch.Tensor) -> torch.Tensor:
        """Scale a float32 (N, 3, H, W) batch in place (the runner's reused input buffer)."""
        if self.exposure_floor:
            lift_shadows(batch, self.exposure_floor, self.luma)
        return batch.sub_(self.mean).div_(self.std)


MAX_LIFT = 32.0  # an image is brightened at most this many times (a mean luminance of 5 still shows masonry cracks)


def lift_shadows(batch: torch.Tensor, floor: float, luma: torch.Tensor) -> torch.Tensor:
    """Brighten each 0..255 image (tile) of the batch whose mean luminance is below ``floor`` to it,
    in place, clipping at 255 as a longer exposure would. The shipped model finds almost no crack
    in a shadow (a soffit at half the light: crack tolerant F1 0.91 -> 0.20 on the crackforest
    mosaic) because its training photos are lit; lifted, the shadow looks like them
    (README: "Shadows and glare"). Images at or above the floor are not touched, bit for bit."""
    level = torch.einsum("nchw,c->n", batch, luma.view(-1)).div_(batch.shape[2] * batch.shape[3])
    gain = (floor / level.clamp_(min=floor / MAX_LIFT)).clamp_(min=1.0)
    # branch-free (no device sync on a GPU): x * 1.0 is x exactly, and 0..255 pixels never reach the clip
    return batch.mul_(gain.view(-1, 1, 1, 1)).clamp_(max=255.0)


def normalise(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], exposure_floor: float = 0.0
) -> torch.Tensor:
    """(N, H, W, 3) 0..255 -> (N, 3, H, W) standardised float32 on the images' device."""
    batch = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    return Standardise(mean, std, images.device, exposure_floor).in_place(batch)


def autocast_for(device: torch.device, bf16: bool | None = None) -> torch.autocast:
    """bf16 autocast on CUDA, a disabled context (fp32) on a CPU; ``bf16`` overrides that (a survey's
    ``precision``: a CPU with native bf16 runs the network twice as fast in it)."""
    enabled = device.type == "cuda" if bf16 is None else bf16
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def predict_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    scales: Scales = SINGLE,
    exposure_floor: float = 0.0,
) -> np.ndarray:
    """Class probabilities (C, H, W) float32 for one RGB uint8 image (H, W, 3), averaged over the
    views ``scales`` (``pipeline.inference.scales``: the same views a survey's tiles get); an image
    darker than ``exposure_floor`` is lifted as a whole (a survey lifts each tile)."""
    batch = torch.tensor(image, device=device).unsqueeze(0)
    with autocast_for(device):
        probs = averaged_probabilities(model, normalise(batch, mean, std, exposure_floor), scales)
    return probs[0].cpu().numpy()


def predict_classes(
    model: torch.nn.Module,
    image: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    thresholds: Thresholds = (),
    exposure_floor: float = 0.0,
) -> np.ndarray:
    """Class ids (H, W) uint8 for one RGB uint8 image (argmax, or the calibrated thresholds)."""
    probs = torch.from_numpy(predict_probabilities(model, image, mean, std, device, exposure_floor=exposure_floor))
    return decide(probs, thresholds).numpy().astype(np.uint8)


def averaged_probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    scales: Scales = SINGLE,
    flips: bool = False,
    out: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean class probabilities (N, C, H, W) float32 of standardised ``inputs`` (N, 3, H, W) over
    every view: each scale, and with ``flips`` each one also mirrored left-right.

    ``out``: gives the buffer the first view's softmax is written into (a runner reuses one); the
    first view is the tile as it is when 1 is among the scales, so one view gives exactly the
    single-pass answer (the same bits as before multi-scale existed).
    """
    total: torch.Tensor | None = None
    views = 0
    for scale in scales:
        for flip in (False, True) if flips else (False,):
            probs = _view_probabilities(forward, inputs, scale, flip, out if total is None else None)
            total = probs if total is None else total.add_(probs)
            views += 1
    assert total is not None  # check_scales: at least one view
    return total if views == 1 else total.div_(views)


def passes_of(count: int, scale: float) -> int:
    """Tiles per forward pass of a view at ``scale``: the largest divisor of ``count`` whose enlarged
    tiles hold no more pixels than ``count`` plain ones. Every pass of a view has one shape (no tile's
    answer depends on where it sits in a batch), and an enlarged batch stays as large as a plain one
    (8 tiles of 512² in one pass ran at 1.51 Mpix/s on 2 CPU cores, 2 at a time at 1.81)."""
    if scale <= 1.0:
        return count
    fitting = [d for d in range(1, count + 1) if count % d == 0 and d * scale * scale <= count]
    return max(fitting, default=1)


def _view_probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    scale: float,
    flip: bool,
    out: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    """One view's probabilities on the tiles' own pixels, ``passes_of`` tiles per forward pass."""
    count, shape = inputs.shape[0], (inputs.shape[-2], inputs.shape[-1])
    per_pass = passes_of(count, scale)
    pieces = []
    for start in range(0, count, per_pass):
        seen = inputs[start : start + per_pass]
        if scale != 1.0:
            seen = F.interpolate(seen, size=view_shape(shape, scale), mode="bicubic", align_corners=False)
        logits = forward(seen.flip(-1) if flip else seen).float()
        probs = torch.softmax(logits, dim=1, out=out(logits)) if out and per_pass == count else logits.softmax(dim=1)
        if flip:
            probs = probs.flip(-1)
        pieces.append(probs if scale == 1.0 else _back_to(probs, shape, scale))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _back_to(probs: torch.Tensor, shape: tuple[int, int], scale: float) -> torch.Tensor:
    """A view's probabilities on the tile's own pixels: the area mean of an enlarged view (each
    tile pixel the mean of the view pixels over it), bilinear from a reduced one."""
    if scale > 1.0:
        return F.adaptive_avg_pool2d(probs, shape)
    return F.interpolate(probs, size=shape, mode="bilinear", align_corners=False)
