"""Luminance, defined once: the grey level in which a crack's darkness, an image's exposure and the
network's shadow lift are all measured (ITU-R BT.601 weights, JPEG's own Y)."""

from __future__ import annotations

import numpy as np

LUMA = (0.299, 0.587, 0.114)


def grey_levels(bands: np.ndarray) -> np.ndarray:
    """Luminance (float64) of (bands, H, W) pixels; a single band is used as it is."""
    data = bands.astype(np.float64)
    if data.shape[0] >= 3:
        return LUMA[0] * data[0] + LUMA[1] * data[1] + LUMA[2] * data[2]
    return data[0]
