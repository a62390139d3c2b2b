"""Multi-scale inference: the network also sees each tile enlarged, and the probabilities are averaged.

Thin cracks are the objects a segmentation network misses first: a 1-px crack is a faint line of
mixed pixels, while the same crack enlarged 2x is a 2-px line the network has learnt to see (on the
shipped model's validation photos a crack is found far more often in a 2x view, at the cost of some
wide cracks and masonry, which the 1x view sees best). The mean over views keeps both; it costs one
forward pass per view at scale² the pixels ((1, 2): 5x a single view).

Every view of a tile depends on that tile's pixels alone (as flip test-time augmentation does), so a
survey stays bit-identical for any block size and worker count. Enlarging uses bicubic weights on the
standardised input, the same as enlarging the image (standardising is affine per channel and the
weights sum to 1); the view's probabilities are brought back by area averaging
(``pipeline.inference.predict.averaged_probabilities``). This module only says what the views are:
it imports no torch, so configuration and the CLI can check them at once.

A survey's views are relative to the model's working GSD: on an input finer than it, the finest view
reads the input's own pixels instead of an enlargement of a reduced copy
(``pipeline.raster.resample.views_on_grid``: a 0.5 mm input with views 1,2 runs as it is with 0.5, 1).
"""

from __future__ import annotations

from collections.abc import Sequence

Scales = tuple[float, ...]
SINGLE: Scales = (1.0,)
MIN_SCALE, MAX_SCALE = 0.5, 4.0


def scales_key(scales: Sequence[float]) -> str:
    """The canonical text of a set of views ("1,2"): the key of its calibrated thresholds and of
    a survey's results."""
    return ",".join(f"{s:g}" for s in scales)


def parse_scales(text: str) -> Scales:
    """``"1,2"`` -> (1.0, 2.0); ValueError with what is wrong otherwise."""
    try:
        scales = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"scales must be numbers separated by commas (e.g. 1,2), got {text!r}") from None
    return check_scales(scales)


def check_scales(scales: Sequence[float]) -> Scales:
    """Sorted, distinct, each within MIN_SCALE..MAX_SCALE (ValueError otherwise)."""
    if not scales:
        raise ValueError("scales must name at least one view (1 is the tile as it is)")
    for scale in scales:
        if not MIN_SCALE <= scale <= MAX_SCALE:
            raise ValueError(f"each scale must be within {MIN_SCALE:g}-{MAX_SCALE:g}, got {scale:g}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"scales are listed twice in {scales_key(scales)}")
    return tuple(sorted(float(s) for s in scales))


def view_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """The pixels a tile of ``shape`` has in the view at ``scale``."""
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))
