"""Compose a large georeferenced survey orthomosaic from labelled crack photos, with exact truth.

Photos are laid in rows with a random horizontal offset per row (a brick pattern, so seams do not
line up), each randomly chosen and flipped / rotated by 180°. Seams are softened by matching every
photo's mean colour to the set's mean and by a smooth illumination field over the whole canvas;
each output pixel still comes from exactly one photo, so the ground truth is exact. An optional
irregular footprint (a wobbly blob) marks the outside as nodata: alpha band (DEFLATE) or internal
mask (JPEG). The canvas is rendered and written in 512-row strips, so memory does not grow with size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.transform import from_origin

from pipeline.class_ids import NO_CLASS
from pipeline.config import ClassSpec
from pipeline.data.labelled import class_lut, find_pairs, load_labelled
from pipeline.errors import MsafError
from pipeline.fsutil import atomic_output

STRIP = 512


@dataclass(frozen=True)
class Cell:
    """One photo placed on the canvas."""

    row0: int
    col0: int
    photo: int
    flip: bool
    rotate180: bool


def _layout(width: int, height: int, cell_h: int, cell_w: int, n_photos: int, rng: np.random.Generator) -> list[Cell]:
    cells = []
    for row0 in range(0, height, cell_h):
        offset = int(rng.integers(0, cell_w))
        for col0 in range(-offset, width, cell_w):
            cells.append(
                Cell(row0, col0, int(rng.integers(0, n_photos)), bool(rng.random() < 0.5), bool(rng.random() < 0.5))
            )
    return cells


def cell_index(width: int, height: int, cell_h: int, cell_w: int, n_photos: int, seed: int) -> np.ndarray:
    """Which cell of ``compose_mosaic``'s layout (same size, photo size, count and seed) each pixel
    shows (int32): two pixels in different cells are on different pieces of wall, however close."""
    index = np.full((height, width), -1, np.int32)
    for k, cell in enumerate(_layout(width, height, cell_h, cell_w, n_photos, np.random.default_rng(seed))):
        index[max(cell.row0, 0) : cell.row0 + cell_h, max(cell.col0, 0) : cell.col0 + cell_w] = k
    return index


def _footprint_rows(r0: int, r1: int, width: int, height: int, harmonics: np.ndarray) -> np.ndarray:
    """Boolean footprint for canvas rows [r0, r1): inside a blob whose radius wobbles with angle."""
    ys, xs = np.mgrid[r0:r1, 0:width].astype(np.float32)
    dy, dx = (ys - height / 2) / (height / 2), (xs - width / 2) / (width / 2)
    theta = np.arctan2(dy, dx)
    radius = np.full_like(theta, 1.0)
    for k, (amp, phase) in enumerate(harmonics, start=2):
        radius += amp * np.cos(k * theta + phase)
    return np.hypot(dx, dy) <= radius


def _parse_crs(crs: str) -> CRS:
    try:
        return CRS.from_user_input(crs)
    except CRSError:
        raise MsafError(f"--crs {crs!r} is not a CRS rasterio understands (e.g. EPSG:32633)") from None


def compose_mosaic(
    images: Path,
    masks: Path,
    out: Path,
    truth: Path,
    width: int,
    height: int,
    gsd: float,
    crs: str,
    classes: list[ClassSpec],
    *,
    compress: Literal["jpeg", "deflate"] = "jpeg",
    footprint: bool = False,
    seed: int = 0,
    origin: tuple[float, float] = (500_000.0, 5_000_000.0),
) -> dict[str, object]:
    """Write ``out`` (RGB/RGBA GeoTIFF, tiled 512) and ``truth`` (class ids, nodata 255).

    Returns a summary: size, photos used, crack fraction inside the footprint.
    """
    if width < 1 or height < 1 or gsd <= 0:
        raise MsafError(f"mosaic size must be >= 1x1 and gsd > 0, got {width}x{height}, gsd {gsd}")
    crs_obj = _parse_crs(crs)
    items = load_labelled(find_pairs(images, masks), class_lut(classes))
    shapes = {item.image.shape for item in items}
    if len(shapes) != 1:
        raise MsafError(f"mosaic photos must share one size, found {sorted(shapes)}")
    cell_h, cell_w = items[0].image.shape[:2]
    rng = np.random.default_rng(seed)
    cells = _layout(width, height, cell_h, cell_w, len(items), rng)
    harmonics = np.stack([rng.uniform(0.02, 0.08, 4), rng.uniform(0, 2 * math.pi, 4)], axis=1)
    set_mean = np.mean([item.image.reshape(-1, 3).mean(0) for item in items], axis=0)
    gains = [set_mean / np.maximum(item.image.reshape(-1, 3).mean(0), 1) for item in items]
    light_phase = rng.uniform(0, 2 * math.pi, 2)

    x0, y0 = origin
    transform = from_origin(x0, y0, gsd, gsd)
    common = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "crs": crs_obj,
        "transform": transform,
        "tiled": True,
        "blockxsize": STRIP,
        "blockysize": STRIP,
        "BIGTIFF": "IF_SAFER",
    }
    if compress == "jpeg":
        image_profile = common | {
            "count": 3,
            "dtype": "uint8",
            "compress": "JPEG",
            "photometric": "YCBCR",
            "jpeg_quality": 90,
        }
    else:
        image_profile = common | {
            "count": 4 if footprint else 3,
            "dtype": "uint8",
            "compress": "DEFLATE",
            "predictor": 2,
        }
    truth_profile = common | {"count": 1, "dtype": "uint8", "compress": "DEFLATE", "nodata": NO_CLASS}

    crack_pixels = valid_pixels = 0
    with (
        atomic_output(out) as tmp_image,
        atomic_output(truth) as tmp_truth,
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(tmp_image, "w", **image_profile) as dst,
        rasterio.open(tmp_truth, "w", **truth_profile) as dst_truth,
    ):
        if compress == "deflate" and footprint:
            dst.colorinterp = [
                rasterio.enums.ColorInterp.red,
                rasterio.enums.ColorInterp.green,
                rasterio.enums.ColorInterp.blue,
                rasterio.enums.ColorInterp.alpha,
            ]
        for r0 in range(0, height, STRIP):
            r1 = min(r0 + STRIP, height)
            rgb = np.zeros((r1 - r0, width, 3), np.float32)
            labels = np.zeros((r1 - r0, width), np.uint8)
            for cell in cells:
                top, bottom = max(cell.row0, r0), min(cell.row0 + cell_h, r1)
                left, right = max(cell.col0, 0), min(cell.col0 + cell_w, width)
                if top >= bottom or left >= right:
                    continue
                item = items[cell.photo]
                photo, label = item.image, item.labels
                if cell.flip:
                    photo, label = photo[:, ::-1], label[:, ::-1]
                if cell.rotate180:
                    photo, label = photo[::-1, ::-1], label[::-1, ::-1]
                src = (slice(top - cell.row0, bottom - cell.row0), slice(left - cell.col0, right - cell.col0))
                dst_rows = slice(top - r0, bottom - r0)
                rgb[dst_rows, left:right] = photo[src] * gains[cell.photo]
                labels[dst_rows, left:right] = label[src]
            ys, xs = np.mgrid[r0:r1, 0:width].astype(np.float32)
            light = 1 + 0.06 * np.sin(2 * math.pi * ys / max(height, 1) + light_phase[0]) * np.cos(
                2 * math.pi * xs / max(width, 1) + light_phase[1]
            )
            rgb = np.clip(rgb * light[..., None], 0, 255).round().astype(np.uint8)
            inside = _footprint_rows(r0, r1, width, height, harmonics) if footprint else np.ones_like(labels, bool)
            labels[~inside] = NO_CLASS
            window = rasterio.windows.Window(0, r0, width, r1 - r0)
            bands = rgb.transpose(2, 0, 1)
            if footprint:
                rgb_out = bands.copy()
                rgb_out[:, ~inside] = 0
                if compress == "deflate":
                    dst.write(np.concatenate([rgb_out, (inside * 255).astype(np.uint8)[None]]), window=window)
                else:
                    dst.write(rgb_out, window=window)
                    dst.write_mask((inside * 255).astype(np.uint8), window=window)
            else:
                dst.write(bands, window=window)
            dst_truth.write(labels, 1, window=window)
            crack_pixels += int(((labels != 0) & (labels != NO_CLASS)).sum())
            valid_pixels += int(inside.sum())
        dst.update_tags(MSAF_MOSAIC=f"composed from {images} (seed {seed})")
    return {
        "width": width,
        "height": height,
        "gsd_m": gsd,
        "crs": crs_obj.to_string(),
        "photos": len(items),
        "cells": len(cells),
        "footprint_fraction": valid_pixels / (width * height),
        "defect_fraction": crack_pixels / max(valid_pixels, 1),
    }
