"""Synthetic crack photographs that look like real optics, for measuring crack-width methods.

A real thin crack is not a sharp dark line: the lens and the demosaicing blur it (a Gaussian PSF of
sigma 0.5-1.5 px), the sensor adds noise, the file is JPEG, the concrete around it is textured and
lit anywhere from grey level 80 to 200, and the crack's core is a shadow (5-40). A segmentation
mask is never exactly the crack either: it is 1-3 px wider, or a pixel narrower. Each ``Survey``
here is one such photograph (one PSF, one lighting, one mask habit) holding cracks of every width
from 0.2 to 8 px, straight and curved, each in a strip of its own; the truth is each crack's width.

Used by ``tests/report/test_width_optics.py`` (the goals) and ``bench/width_accuracy.py`` (the
README table), so both measure the same photographs.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from scipy import ndimage

WIDTHS_PX = (0.2, 0.3, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0, 4.0, 6.0, 8.0)
PSF_SIGMAS_PX = (0.5, 1.0, 1.5)
MASK_MARGINS_PX = (1, 2, 3, -1)  # mask width minus crack width (total, both sides together)
STRIP_PX = 56  # rows per crack: the crack, its blur, the report's ring and a gap
LENGTH_PX = 200
GSD_M = 0.001
SUPERSAMPLE = 8


@dataclass(frozen=True)
class Survey:
    """One photograph's optics and lighting."""

    psf_sigma_px: float
    mask_margin_px: int
    background: float  # mean grey level of the concrete
    core: float  # grey level of a crack's shadowed core
    jpeg_quality: int = 85
    seed: int = 0

    @property
    def name(self) -> str:
        margin = f"+{self.mask_margin_px}" if self.mask_margin_px > 0 else str(self.mask_margin_px)
        return f"psf{self.psf_sigma_px:g}_mask{margin}_bg{self.background:g}_core{self.core:g}"


@dataclass(frozen=True)
class Crack:
    """One crack of the photograph: its strip, width and shape."""

    strip: int
    width_px: float
    curved: bool
    centre_offset_px: float  # sub-pixel position of the centreline

    @property
    def centre_row(self) -> float:
        return self.strip * STRIP_PX + STRIP_PX / 2 + self.centre_offset_px


def standard_surveys() -> list[Survey]:
    """Every PSF x mask habit, each under its own lighting (backgrounds 80-200, cores 5-40)."""
    lights = [(80.0, 20.0), (140.0, 5.0), (200.0, 40.0), (110.0, 30.0)]
    surveys = []
    for i, sigma in enumerate(PSF_SIGMAS_PX):
        for j, margin in enumerate(MASK_MARGINS_PX):
            background, core = lights[(i + j) % len(lights)]
            surveys.append(Survey(sigma, margin, background, core, seed=10 * i + j))
    return surveys


def cracks_of(survey: Survey) -> list[Crack]:
    """Every width twice straight and twice curved; centres at whole, half and odd pixel offsets."""
    rng = np.random.default_rng(survey.seed)
    cracks: list[Crack] = []
    for i, width in enumerate(WIDTHS_PX):
        for curved in (False, True, False, True):
            cracks.append(Crack(len(cracks), width, curved, float(rng.choice([0.0, 0.5, 0.23, -0.37]) + (i % 2) * 0.5)))
    return cracks


def _centre(crack: Crack, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centreline row and its slope at each column."""
    if crack.curved:
        amplitude, wavelength = 6.0, 140.0
        phase = 2 * np.pi * cols / wavelength
        return crack.centre_row + amplitude * np.sin(phase), amplitude * 2 * np.pi / wavelength * np.cos(phase)
    slope = 0.05
    return crack.centre_row + slope * (cols - cols.mean()), np.full_like(cols, slope)


def _coverage(shape: tuple[int, int], cracks: list[Crack], widths: list[float], supersample: int) -> np.ndarray:
    """Area share of each pixel within width/2 of a crack's centreline (perpendicular distance)."""
    width = shape[1]
    cover = np.zeros(shape)
    offsets = (np.arange(supersample) + 0.5) / supersample
    start = (width - LENGTH_PX) / 2
    for crack, crack_width in zip(cracks, widths, strict=True):
        row0 = max(0, crack.strip * STRIP_PX)
        rows = np.arange(row0, row0 + STRIP_PX)
        sub_rows = (rows[:, None] + offsets[None, :]).ravel()
        for dc in offsets:
            cols = np.arange(width) + dc
            along = (cols >= start) & (cols < start + LENGTH_PX)
            centre, slope = _centre(crack, cols)
            inside = np.abs(sub_rows[:, None] - centre[None, :]) / np.sqrt(1 + slope**2)[None, :] <= crack_width / 2
            cover[rows] += inside.reshape(len(rows), supersample, width).mean(axis=1) * along / supersample
    return np.clip(cover, 0, 1)


def render(survey: Survey) -> tuple[np.ndarray, np.ndarray, list[Crack]]:
    """(RGB uint8 image after PSF, noise and JPEG; boolean mask of the mask habit; the cracks)."""
    rng = np.random.default_rng(survey.seed)
    cracks = cracks_of(survey)
    shape = (len(cracks) * STRIP_PX, LENGTH_PX + 60)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), 6)
    texture /= texture.std()
    grain = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.0)
    grain /= grain.std()
    concrete = survey.background * (1 + 0.05 * texture + 0.03 * grain)
    cover = _coverage(shape, cracks, [c.width_px for c in cracks], SUPERSAMPLE)
    scene = concrete * (1 - cover) + survey.core * cover
    optics = ndimage.gaussian_filter(scene, survey.psf_sigma_px, mode="reflect")
    optics += rng.normal(0, 2.0, shape)  # sensor noise
    rgb = np.clip(np.stack([optics * 1.03, optics, optics * 0.95], axis=-1), 0, 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=survey.jpeg_quality)
    image = np.asarray(Image.open(buffer)).transpose(2, 0, 1).copy()
    mask_widths = [max(1.0, c.width_px + survey.mask_margin_px) for c in cracks]
    mask = _coverage(shape, cracks, mask_widths, 1) > 0.5
    return image, mask, cracks


def write_survey(survey: Survey, folder: Path, class_names: tuple[str, ...] = ("background", "crack")) -> list[Crack]:
    """The photograph as ``ortho.tif`` and its mask as ``survey/mask.tif`` (UTM, 1 mm GSD)."""
    image, mask, cracks = render(survey)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "survey").mkdir(exist_ok=True)
    height, width = mask.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 5000000, GSD_M, GSD_M),
    }
    with rasterio.open(folder / "ortho.tif", "w", count=3, dtype="uint8", **profile) as dst:
        dst.write(image)
    with rasterio.open(folder / "survey" / "mask.tif", "w", count=1, dtype="uint8", nodata=255, **profile) as dst:
        dst.write(mask.astype(np.uint8), 1)
        dst.update_tags(MSAF_CLASSES=json.dumps(list(class_names)))
    return cracks


def crack_at(cracks: list[Crack], northing: float) -> Crack:
    """The crack whose strip holds a defect's centroid (rows count down from the top edge)."""
    row = (5000000 - northing) / GSD_M
    return cracks[min(len(cracks) - 1, max(0, int(row // STRIP_PX)))]
