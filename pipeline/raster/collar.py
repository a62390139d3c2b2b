"""The collar of an orthomosaic that declares no footprint: the black (or white) fill its writer put
around and inside the ground it mapped.

An orthomosaic without alpha, nodata value or mask still has a footprint; it is only painted in.
The network reads such a fill as a defect: the shipped model calls a black fill crack, pixel for
pixel (830,964 crack pixels on a 1536² JPEG mosaic a third of which is black fill, against 29,767
with its mask), and the report rates it and counts its area as surveyed ground. GDAL's
``nearblack`` finds a collar by scanning each row in from the raster's edge, which misses the holes
photogrammetry leaves inside a mosaic and needs whole rows, so a block could not decide alone.

The rule here is local instead: a pixel is collar when it lies in a ``size``² square whose every
pixel is within ``near`` grey levels of black in all three bands (a morphological opening of the
fill colour), or when it lies within ``fringe`` px of such a pixel and within ``fringe_near`` of
black: the smear a JPEG leaves along the fill's edge. A crack, even a black one, is narrower than
the square and stays; a fill is wider. Outside the raster and the file's own nodata count as fill,
so a thin strip along the edge is found too. White fill is an option: clipped glare is white too.

A pixel's answer depends only on pixels within ``reach`` of it, so a read box is judged with a
frame that wide around it, read only on the sides where fill colour comes near the box's edge (a
box inside the mapped ground reads nothing more), and the mask stays bit-identical for any block
size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.errors import RasterioError
from rasterio.windows import Window
from scipy import ndimage

from pipeline.raster.grid import Box
from pipeline.raster.source import DatasetPerThread, SourceInfo, read_failed, to_uint8


@dataclass(frozen=True)
class CollarRule:
    """Which pixels are fill: within ``near`` of black (or white) in every band, in a ``size``² square
    of such pixels (``size`` odd, so the opening is exact with a centred square); and the fringe a
    lossy codec smeared along its edge: pixels within ``fringe`` px of it and ``fringe_near`` of
    the fill colour."""

    near: int
    size: int
    fringe: int = 0
    fringe_near: int = 0
    white: bool = False  # white fill too (clipped glare is white: it would be taken with it)

    @property
    def reach(self) -> int:
        """How far from a pixel its answer looks: the frame a read box is judged with."""
        return self.size - 1 + self.fringe

    def fill_colour(self, pixels: np.ndarray) -> np.ndarray:
        """How near pixels (3, H, W) are to the fill colour, as uint8 levels (H, W): 2 within ``near``
        of black in every band (or of white, with ``white``), 1 within ``fringe_near`` only, 0 neither."""
        brightest = np.maximum(np.maximum(pixels[0], pixels[1]), pixels[2])
        fill = brightest <= self.near
        smear = brightest <= self.fringe_near  # holds fill: fringe_near >= near
        if self.white:
            darkest = np.minimum(np.minimum(pixels[0], pixels[1]), pixels[2])
            fill |= darkest >= 255 - self.near
            smear |= darkest >= 255 - self.fringe_near
        if not self.fringe:
            return fill.view(np.uint8) * np.uint8(2)
        return fill.view(np.uint8) + smear.view(np.uint8)

    def collar(self, levels: np.ndarray) -> np.ndarray:
        """The collar (H, W bool) of fill levels (``fill_colour``; beyond its edges counted as fill):
        fill in an all-fill ``size``² square, and fringe within ``fringe`` px of that."""
        pad = self.size // 2  # squares reaching past the edges are centred there: padded with fill
        padded = np.pad(levels, pad, constant_values=2)
        fill = (padded == 2).view(np.uint8)
        eroded = ndimage.minimum_filter(fill, size=self.size, mode="constant", cval=1)
        collar = ndimage.maximum_filter(eroded, size=self.size, mode="constant", cval=0)
        if self.fringe:
            near_collar = ndimage.maximum_filter(collar, size=2 * self.fringe + 1, mode="constant", cval=0)
            collar |= near_collar & (padded > 0)
        return collar[pad:-pad, pad:-pad].view(bool)


class CollarFinder:
    """Clears the collar from the footprint of each read box (``clear``), reading the frame it needs
    from a dataset handle of each calling thread."""

    def __init__(self, info: SourceInfo, rule: CollarRule) -> None:
        self.info = info
        self.rule = rule
        self._datasets = DatasetPerThread(info.source)

    def clear(self, box: Box, pixels: np.ndarray, valid: np.ndarray) -> None:
        """Set ``valid`` False on the collar of ``box`` (pixels (3, h, w), footprint (h, w))."""
        fill = self.rule.fill_colour(pixels)
        fill[~valid] = 2
        if not (fill == 2).any() and not self._fringe_by_sides(fill):
            return
        reach = self.rule.reach
        top, left = min(reach, box.row0), min(reach, box.col0)
        bottom, right = min(reach, self.info.height - box.row1), min(reach, self.info.width - box.col1)
        framed = np.zeros((top + box.height + bottom, left + box.width + right), np.uint8)
        framed[top : top + box.height, left : left + box.width] = fill
        # a side is read only where fill comes within reach of it: a square crossing a side holds box
        # pixels next to that side, so with none of them fill, what lies beyond cannot change an answer
        sides = {
            "top": top and fill[:reach].any(),
            "bottom": bottom and fill[-reach:].any(),
            "left": left and fill[:, :reach].any(),
            "right": right and fill[:, -reach:].any(),
        }
        row0, col0 = box.row0 - top, box.col0 - left
        full_rows = (row0, box.row1 + bottom)
        strips = {  # (rows, cols) on the raster, as half-open ranges
            "top": ((row0, box.row0), (col0, box.col1 + right)),
            "bottom": ((box.row1, box.row1 + bottom), (col0, box.col1 + right)),
            "left": (full_rows, (col0, box.col0)),
            "right": (full_rows, (box.col1, box.col1 + right)),
        }
        for side, wanted in sides.items():
            if wanted:
                (r0, r1), (c0, c1) = strips[side]
                framed[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = self._fill_of(r0, r1, c0, c1)
        collar = self.rule.collar(framed)[top : top + box.height, left : left + box.width]
        valid &= ~collar

    def _fringe_by_sides(self, fill: np.ndarray) -> bool:
        """Whether fringe colour lies within ``fringe`` px of the box's sides: without fill in the box
        only a collar beyond them could claim it."""
        band = self.rule.fringe
        if not band:
            return False
        return bool(fill[:band].any() or fill[-band:].any() or fill[:, :band].any() or fill[:, -band:].any())

    def _fill_of(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """Fill levels of a window of the raster (rows and columns half-open), nodata as fill."""
        ds = self._datasets.get()
        window = Window(col0, row0, col1 - col0, row1 - row0)
        try:
            data = ds.read(self.info.bands, window=window)
            nodata = ds.dataset_mask(window=window) == 0
        except RasterioError as exc:
            raise read_failed(self.info, row0, row1, col0, col1, exc) from None
        levels = self.rule.fill_colour(data if self.info.scale is None else to_uint8(data, self.info.scale))
        levels[nodata] = 2
        return levels

    def close(self) -> None:
        """Close every thread's dataset."""
        self._datasets.close()
