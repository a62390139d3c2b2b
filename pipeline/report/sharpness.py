"""Can the image show a crack here? The orthomosaic's blur, sampled for the condition grid.

A crack-free cell is only good (CS1) if a crack there would have been seen, and a defocused or
shaken photo in the orthomosaic hides thin cracks the way a shadow does (``pipeline.report.exposure``).
Blur is a pixel-scale property, so it cannot be read from a decimated image: each cell is sampled
by one full-resolution window (``WINDOW_PX``) at its centre, moved inside the file's internal
block there so that a tiled orthomosaic decodes one block per window. Blur changes over metres (a
source photo's footprint), not millimetres, so a survey with more cells than ``MAX_WINDOWS``
samples every k-th cell each way and gives its neighbours its reading. Memory and time are flat
in raster size (at most ``MAX_WINDOWS`` windows).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from pipeline.raster.luminance import grey_levels
from pipeline.raster.sharpness import blur_sigma_px
from pipeline.raster.source import file_bit_depth_scale, rgb_bands, to_uint8
from pipeline.raster.trust import driver_for

WINDOW_PX = 128  # side of the window that samples a cell's blur
MAX_WINDOWS = 2048  # at most this many windows per survey


def sample_stride(rows: int, cols: int) -> int:
    """Every how many cells (each way) a window is read so that at most MAX_WINDOWS are."""
    return max(1, math.ceil(math.sqrt(rows * cols / MAX_WINDOWS)))


def _window_at(row: float, col: float, image: rasterio.DatasetReader) -> Window:
    """A WINDOW_PX window centred on (row, col), moved inside the file's block there when the blocks
    are large enough, and inside the raster."""
    block_h, block_w = image.block_shapes[0]
    start = []
    for centre, block, size in ((row, block_h, image.height), (col, block_w, image.width)):
        side = min(WINDOW_PX, size)
        first = round(centre - side / 2)
        if block >= side:  # stay inside the block holding the centre
            block_start = int(centre // block) * block
            first = min(max(first, block_start), min(block_start + block, size) - side)
        start.append(min(max(first, 0), size - side))
    return Window(start[1], start[0], min(WINDOW_PX, image.width), min(WINDOW_PX, image.height))


def blur_at(image_path: Path, rows_px: np.ndarray, cols_px: np.ndarray) -> np.ndarray:
    """The blur (step-edge equivalent sigma, px; NaN where too plain to tell) of the orthomosaic
    around each pixel position, on the 8-bit scale the survey saw."""
    blur = np.full(len(rows_px), np.nan)
    with rasterio.open(image_path, driver=driver_for(str(image_path), "vrt")) as image:
        bands, scale = rgb_bands(image), None
        for i, (row, col) in enumerate(zip(rows_px, cols_px, strict=True)):
            window = _window_at(float(row), float(col), image)
            pixels = image.read(bands, window=window)
            if pixels.dtype != np.uint8:
                scale = scale or file_bit_depth_scale(image)
                pixels = to_uint8(pixels, scale)
            valid = image.dataset_mask(window=window) > 0
            blur[i] = blur_sigma_px(grey_levels(pixels), valid)
    return blur


def blur_per_cell(
    image_path: Path, cell_rows_px: np.ndarray, cell_cols_px: np.ndarray, surveyed: np.ndarray
) -> np.ndarray:
    """Per cell of a (rows, cols) grid: the blur read in its block of ``sample_stride`` cells each
    way, at the surveyed cell nearest the block's middle (NaN in a block without surveyed ground or
    whose window is too plain to tell). ``cell_rows_px`` / ``cell_cols_px``: the image rows and
    columns of the grid's cell centres."""
    rows, cols = surveyed.shape
    stride = sample_stride(rows, cols)
    blocks, centres_r, centres_c = [], [], []
    for top in range(0, rows, stride):
        for left in range(0, cols, stride):
            ground_r, ground_c = np.nonzero(surveyed[top : top + stride, left : left + stride])
            if not len(ground_r):
                continue
            middle = (min(stride, rows - top) - 1) / 2, (min(stride, cols - left) - 1) / 2
            nearest = int(np.argmin(np.hypot(ground_r - middle[0], ground_c - middle[1])))
            blocks.append((top, left))
            centres_r.append(cell_rows_px[top + ground_r[nearest]])
            centres_c.append(cell_cols_px[left + ground_c[nearest]])
    blur = np.full((rows, cols), np.nan)
    readings = blur_at(image_path, np.asarray(centres_r), np.asarray(centres_c))
    for (top, left), reading in zip(blocks, readings, strict=True):
        blur[top : top + stride, left : left + stride] = reading
    return blur
