"""What the condition states cost a report, against tracing the survey's footprint (a step every
report with an area of interest and every change report already takes), on masks of growing size;
and what reading the orthomosaic adds to them (its exposure, decimated, and its blur, in at most
``MAX_WINDOWS`` full-resolution windows), on a JPEG-tiled orthomosaic of the same size.

A mask COG (nearest overviews, as `msaf survey` writes it) with a round footprint and random crack
centreline pieces at a fixed density is written per size; each step runs in this process, and the
peak memory each adds is read from tracemalloc (numpy's buffers included). Memory must not grow
with the raster: both steps read the mask decimated.

    python bench/condition_speed.py --sizes 4096 16384 --out metrics/condition_speed.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from scipy.ndimage import gaussian_filter

from pipeline.config import ConditionConfig, SeverityConfig
from pipeline.report.condition import assess_condition
from pipeline.report.footprint import mask_footprint

GSD_M = 0.001
CRACK_M_PER_M2 = 1.5  # crack length per square metre of ground: moderate spacing (0.67 m)


def write_mask(path: Path, size: int) -> None:
    """A ``size``² uint8 mask at 1 mm, nodata (255) outside a disc, written in strips, with overviews."""
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(400000, 5000000, GSD_M, GSD_M),
        "nodata": 255,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as ds:
        for top in range(0, size, 1024):
            rows = min(1024, size - top)
            yy, xx = np.ogrid[top : top + rows, 0:size]
            strip = np.where((xx - size / 2) ** 2 + (yy - size / 2) ** 2 > (size / 2) ** 2, 255, 0).astype(np.uint8)
            ds.write(strip, 1, window=rasterio.windows.Window(0, top, size, rows))
        ds.build_overviews([2, 4, 8, 16, 32, 64], Resampling.nearest)


def drone_ortho_profile(
    size: int, origin: tuple[float, float] = (400000.0, 5000000.0), block: int = 256, quality: int = 85
) -> dict:
    """A ``size``² RGB GeoTIFF at 1 mm in EPSG:32633, JPEG-tiled (YCbCr) as drone software writes one."""
    return {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(*origin, GSD_M, GSD_M),
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "jpeg",
        "jpeg_quality": quality,
        "photometric": "ycbcr",
    }


def write_ortho(path: Path, size: int, seed: int = 0) -> None:
    """A ``size``² RGB orthomosaic at 1 mm, textured concrete, JPEG-tiled (256², q85) as drone
    software writes one, with overviews; written in strips."""
    rng = np.random.default_rng(seed)
    profile = drone_ortho_profile(size)
    with rasterio.open(path, "w", **profile) as ds:
        for top in range(0, size, 1024):
            rows = min(1024, size - top)
            grey = np.clip(150 + gaussian_filter(rng.normal(0, 25, (rows, size)), 1.0), 0, 255).astype(np.uint8)
            ds.write(np.stack([grey] * 3), window=rasterio.windows.Window(0, top, size, rows))
        ds.build_overviews([2, 4, 8, 16, 32], Resampling.average)


def crack_pieces(size: int, seed: int = 0) -> gpd.GeoDataFrame:
    """20 mm centreline pieces (the report's segments) at CRACK_M_PER_M2, widths 0.2-3 mm."""
    rng = np.random.default_rng(seed)
    side_m = size * GSD_M
    count = int(CRACK_M_PER_M2 * side_m**2 / 0.02)
    x, y = rng.uniform(0, side_m, count), rng.uniform(0, side_m, count)
    angle = rng.uniform(0, np.pi, count)
    start = np.stack([400000 + x, 5000000 - y], axis=1)
    end = start + 0.02 * np.stack([np.cos(angle), -np.sin(angle)], axis=1)
    lines = shapely.linestrings(np.stack([start, end], axis=1))
    return gpd.GeoDataFrame(
        {"length_m": np.full(count, 0.02), "width_mm": rng.uniform(0.2, 3.0, count)}, geometry=lines, crs="EPSG:32633"
    )


def measured(step) -> tuple[float, float]:
    """(seconds, peak MB allocated during the step): timed in a run of its own, as tracemalloc slows
    every allocation it traces."""
    started = time.perf_counter()
    step()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    step()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            mask = Path(tmp) / f"mask-{size}.tif"
            write_mask(mask, size)
            pieces = crack_pieces(size)
            footprint_s, footprint_mb = measured(lambda m=mask: mask_footprint(m, "EPSG:32633"))
            condition_s, condition_mb = measured(
                lambda m=mask, p=pieces: assess_condition(m, p, ConditionConfig(), SeverityConfig())
            )
            cells = len(assess_condition(mask, pieces, ConditionConfig(), SeverityConfig()).cells)
            ortho = Path(tmp) / f"ortho-{size}.tif"
            write_ortho(ortho, size)
            image_s, image_mb = measured(
                lambda m=mask, p=pieces, o=ortho: assess_condition(m, p, ConditionConfig(), SeverityConfig(), o)
            )
            ortho.unlink()
            row = {
                "size": size,
                "pieces": len(pieces),
                "cells": cells,
                "footprint_s": round(footprint_s, 3),
                "condition_s": round(condition_s, 3),
                "ratio": round(condition_s / footprint_s, 2),
                "footprint_peak_mb": round(footprint_mb, 1),
                "condition_peak_mb": round(condition_mb, 1),
                "with_image_s": round(image_s, 3),
                "with_image_ratio": round(image_s / condition_s, 2),
                "with_image_peak_mb": round(image_mb, 1),
            }
            rows.append(row)
            print(
                f"{size}²: {row['pieces']} pieces, {row['cells']} cells; footprint {footprint_s:.2f} s "
                f"({footprint_mb:.0f} MB), condition states {condition_s:.2f} s ({condition_mb:.0f} MB): "
                f"{row['ratio']}x the footprint; with the orthomosaic's exposure and blur {image_s:.2f} s "
                f"({image_mb:.0f} MB): {row['with_image_ratio']}x without"
            )
    if args.out:
        args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
