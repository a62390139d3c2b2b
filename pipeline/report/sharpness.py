"""Can the image show a crack here? The orthomosaic's blur, sampled for the condition grid.

A crack-free cell is only good (CS1) if a crack there would have been seen, and a defocused or
shaken photo in the orthomosaic hides thin cracks the way a shadow does (``pipeline.report.exposure``).
Blur is a pixel-scale property, so it cannot be read from a decimated image: each cell is sampled
by one full-resolution window (``WINDOW_PX``) at its centre, moved inside the file's internal
block there so that a tiled orthomosaic decodes one block per window. Blur changes over metres (a
source photo's footprint), not millimetres, so a survey with more cells than ``MAX_WINDOWS``
samples every k-th cell each way and gives its neighbours its reading; every reading is then the
median of its own and its four neighbours' (one window's reading scatters). Memory and time are flat in
raster size (at most ``MAX_WINDOWS`` windows).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from pipeline.raster.luminance import grey_levels
from pipeline.raster.sharpness import blur_sigma_px
from pipeline.raster.source import on_survey_scale, rgb_bands
from pipeline.raster.trust import driver_for

WINDOW_PX = 128  # side of the window that samples a cell's blur (a cell's side where that is less)
CROSS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # a reading and its four neighbours'
MIN_WINDOW_PX = 48  # a smaller cell is still read through a window this large (its neighbours' edges too)
MAX_WINDOWS = 2048  # at most this many windows per survey


def sample_stride(rows: int, cols: int) -> int:
    """Every how many cells (each way) a window is read so that at most MAX_WINDOWS are."""
    return max(1, math.ceil(math.sqrt(rows * cols / MAX_WINDOWS)))


def _window_at(row: float, col: float, image: rasterio.DatasetReader, window_px: int) -> Window:
    """A ``window_px`` window centred on (row, col), moved inside the file's block there when the
    blocks are large enough, and inside the raster."""
    block_h, block_w = image.block_shapes[0]
    start = []
    for centre, block, size in ((row, block_h, image.height), (col, block_w, image.width)):
        side = min(window_px, size)
        first = round(centre - side / 2)
        if block >= side:  # stay inside the block holding the centre
            block_start = int(centre // block) * block
            first = min(max(first, block_start), min(block_start + block, size) - side)
        start.append(min(max(first, 0), size - side))
    return Window(start[1], start[0], min(window_px, image.width), min(window_px, image.height))


def blur_at(image_path: Path, rows_px: np.ndarray, cols_px: np.ndarray, window_px: int = WINDOW_PX) -> np.ndarray:
    """The blur (step-edge equivalent sigma, px; NaN where too plain to tell) of the orthomosaic in a
    ``window_px`` window around each pixel position, on the 8-bit scale the survey saw."""
    blur = np.full(len(rows_px), np.nan)
    with rasterio.open(image_path, driver=driver_for(str(image_path), "vrt")) as image:
        bands = rgb_bands(image)
        for i, (row, col) in enumerate(zip(rows_px, cols_px, strict=True)):
            window = _window_at(float(row), float(col), image, window_px)
            pixels = on_survey_scale(image, image.read(bands, window=window))
            valid = image.dataset_mask(window=window) > 0
            blur[i] = blur_sigma_px(grey_levels(pixels), valid)
    return blur


def blur_per_cell(
    image_path: Path, cell_rows_px: np.ndarray, cell_cols_px: np.ndarray, surveyed: np.ndarray, cell_px: float
) -> np.ndarray:
    """Per cell of a (rows, cols) grid: the orthomosaic's blur around it (NaN without surveyed ground,
    or where it and its neighbours are all too plain to tell).

    One window is read per block of ``sample_stride`` cells each way, at the surveyed cell nearest
    the block's middle; each block then takes the median of its own and its four neighbours'
    readings. One window's reading scatters (a sharp mosaic's 128-px windows read over 2 px about
    one time in ten, ``bench/blur_robustness.py``) while blur changes over metres, so the median
    keeps a defocused patch of 2 x 2 blocks or more and drops a stray reading (or two side by side);
    a window too plain to read takes its neighbours' median.
    ``cell_rows_px`` / ``cell_cols_px``: the image rows and columns of the grid's cell centres;
    ``cell_px``: a cell's side in pixels (the window is no larger, so a cell is read on its own ground).
    """
    rows, cols = surveyed.shape
    stride = sample_stride(rows, cols)
    block_rows, block_cols = math.ceil(rows / stride), math.ceil(cols / stride)
    blocks, centres_r, centres_c = [], [], []
    for block_r in range(block_rows):
        for block_c in range(block_cols):
            top, left = block_r * stride, block_c * stride
            ground_r, ground_c = np.nonzero(surveyed[top : top + stride, left : left + stride])
            if not len(ground_r):
                continue
            middle = (min(stride, rows - top) - 1) / 2, (min(stride, cols - left) - 1) / 2
            nearest = int(np.argmin(np.hypot(ground_r - middle[0], ground_c - middle[1])))
            blocks.append((block_r, block_c))
            centres_r.append(cell_rows_px[top + ground_r[nearest]])
            centres_c.append(cell_cols_px[left + ground_c[nearest]])
    readings = np.full((block_rows, block_cols), np.nan)
    window_px = int(np.clip(cell_px, MIN_WINDOW_PX, WINDOW_PX))
    for (block_r, block_c), reading in zip(
        blocks, blur_at(image_path, np.asarray(centres_r), np.asarray(centres_c), window_px), strict=True
    ):
        readings[block_r, block_c] = reading
    padded = np.pad(readings, 1, constant_values=np.nan)
    neighbourhoods = np.stack([padded[1 + dr : 1 + dr + block_rows, 1 + dc : 1 + dc + block_cols] for dr, dc in CROSS])
    with warnings.catch_warnings():  # a neighbourhood with no reading at all stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        smoothed = np.nanmedian(neighbourhoods, axis=0)
    has_ground = np.zeros((block_rows, block_cols), bool)
    has_ground[tuple(np.array(blocks, np.int64).reshape(-1, 2).T)] = True
    smoothed[~has_ground] = np.nan
    return np.repeat(np.repeat(smoothed, stride, axis=0), stride, axis=1)[:rows, :cols]
