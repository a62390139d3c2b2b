"""Can the image show a crack here? The exposure of the orthomosaic, sampled for the condition grid.

A crack-free cell is only good (CS1) if a crack there would have been seen. The survey lifts
shadows before the network (``survey.exposure_floor``), but in a deep shadow every grey level is a
few counts above black and a thin crack's contrast is lost in sensor noise and JPEG; under glare
the concrete clips at white and takes the crack with it. The crack map then finds nothing, and a
report that calls that ground CS1 is wrong in the way that matters. The limits
(``ConditionConfig.min_luminance``, ``max_clipped_share``) are where the crack map fails
(``bench/exposure_robustness.py``).

Memory is flat in raster size: the image is read decimated (nearest, so each sample is one real
pixel and the shares are the image's own) onto the same samples as the mask's surveyed area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from pipeline.raster.luminance import grey_levels
from pipeline.raster.source import on_survey_scale, rgb_bands
from pipeline.raster.trust import driver_for

CLIP_LEVEL = 250  # a pixel with any band at or above this grey level (of 255) is clipped


@dataclass(frozen=True)
class ExposureStatistics:
    """How light an image area is: its mean luminance and its share of clipped pixels."""

    mean_luminance: float  # 0-255
    clipped_share: float  # pixels with a band at or above CLIP_LEVEL


@dataclass(frozen=True)
class ExposureSamples:
    """Per sample of a decimated read: luminance (0-255), clipped, and whether the image has data."""

    luminance: np.ndarray  # float32 (rows, cols)
    clipped: np.ndarray  # bool
    valid: np.ndarray  # bool


def exposure_statistics(bands: np.ndarray, valid: np.ndarray | None = None) -> ExposureStatistics:
    """The exposure of the valid pixels of a (bands, rows, cols) 8-bit image (NaN when none is valid)."""
    samples = _samples(bands, np.ones(bands.shape[1:], bool) if valid is None else valid)
    if not samples.valid.any():
        return ExposureStatistics(math.nan, math.nan)
    return ExposureStatistics(
        float(samples.luminance[samples.valid].mean()), float(samples.clipped[samples.valid].mean())
    )


def exposure_samples(image_path: Path, shape: tuple[int, int]) -> ExposureSamples:
    """The orthomosaic's exposure read decimated to ``shape`` (rows, cols), on the 8-bit scale the
    survey saw (other types scaled as the survey scales them by default)."""
    with rasterio.open(image_path, driver=driver_for(str(image_path), "vrt")) as image:
        bands = image.read(rgb_bands(image), out_shape=(3, *shape), resampling=Resampling.nearest)
        valid = image.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
        bands = on_survey_scale(image, bands)
    return _samples(bands, valid)


def _samples(bands: np.ndarray, valid: np.ndarray) -> ExposureSamples:
    clipped = np.any(bands[:3] >= CLIP_LEVEL, axis=0)
    return ExposureSamples(grey_levels(bands).astype(np.float32), np.asarray(clipped), valid.astype(bool))
