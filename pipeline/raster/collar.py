"""The collar of an orthomosaic that declares no footprint: the black (or white) fill its writer put
around and inside the ground it mapped.

An orthomosaic without alpha, nodata value or mask still has a footprint; it is only painted in.
The network reads such a fill as a defect: the shipped model calls a black fill crack, pixel for
pixel (831,365 crack pixels on a 1536² mosaic a third of which is black fill, against 29,767 with
its mask), and the report rates it and counts its area as surveyed ground. GDAL's ``nearblack``
finds a collar by scanning each row in from the raster's edge, which misses the holes
photogrammetry leaves inside a mosaic and needs whole rows, so a block could not decide alone.

The rule here is local instead, on a lattice of 8-px cells aligned to the raster's origin: a cell
whose every pixel is within ``near`` grey levels of black in all three bands is a fill cell; fill
cells in a square of fill cells ``size`` px wide are collar (an opening, cell by cell); and in the
cells touching the collar, every pixel within ``smear`` of black is collar too: the fill's ragged
edge through a cell, and the smear a JPEG leaves along it. A crack, even a black one, is narrower
than the square and stays; a fill is wider. Outside the raster and the file's own nodata count as
fill, so a thin strip along the edge is found too. White fill is an option: clipped glare is white.

Deciding cells rather than pixels makes it cheap (a 4096² block on the edge of the footprint in
~0.1 s where a pixel-level opening took 0.5-0.8 s, ``bench/collar_cost.py``). A pixel's answer
depends only on cells within ``reach`` of it, so a read box is judged with a frame that wide around
it, out to the lattice, read only on the sides where fill comes near the box's edge (a box inside
the mapped ground reads nothing more), and the mask stays bit-identical for any block size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.errors import RasterioError
from rasterio.windows import Window
from scipy import ndimage

from pipeline.config import CollarConfig
from pipeline.raster.grid import Box
from pipeline.raster.source import DatasetPerThread, SourceInfo, read_failed, to_uint8

CELL = 8  # px: the collar is decided on a lattice of these cells, aligned to the raster's origin


@dataclass(frozen=True)
class CollarRule:
    """Which pixels are fill: a cell of the raster's 8-px lattice whose every pixel is within ``near``
    of black in every band (or of white, with ``white``) is a fill cell; fill cells in a ``size``-px
    square of fill cells (``size`` a multiple of 8: a cell-level opening) are collar, and so is
    every pixel within ``smear`` of the fill colour in a cell touching them (the fill's ragged
    edge, and the smear a lossy codec left along it)."""

    near: int
    size: int
    smear: int = 0
    white: bool = False  # white fill too (clipped glare is white: it would be taken with it)

    @classmethod
    def of(cls, cfg: CollarConfig) -> CollarRule:
        """The rule a survey's settings ask for."""
        return cls(cfg.near, cfg.size, cfg.smear, cfg.white)

    @property
    def cells(self) -> int:
        """The square's side in cells."""
        return self.size // CELL

    @property
    def reach(self) -> int:
        """How far from a box's pixels their answers look, cell alignment included: the frame a read
        box is judged with (the square's cells, one touching cell and the box's partial cell)."""
        return (self.cells + 1) * CELL

    def fill_colour(self, pixels: np.ndarray) -> np.ndarray:
        """How near pixels (3, H, W) are to the fill colour, as uint8 levels (H, W): 2 within ``near``
        of black in every band (or of white, with ``white``), 1 within ``smear`` only, 0 neither."""
        brightest = np.maximum(np.maximum(pixels[0], pixels[1]), pixels[2])
        fill = brightest <= self.near
        smear = brightest <= max(self.near, self.smear)
        if self.white:
            darkest = np.minimum(np.minimum(pixels[0], pixels[1]), pixels[2])
            fill |= darkest >= 255 - self.near
            smear |= darkest >= 255 - max(self.near, self.smear)
        return fill.view(np.uint8) + smear.view(np.uint8)

    def collar(self, levels: np.ndarray) -> np.ndarray:
        """The collar (H, W bool) of fill levels (``fill_colour``) whose first pixel is on the lattice.
        Beyond the array counts as fill: its partial cells are filled up, and squares may reach past it
        (so a strip of fill a cell wide along it is collar); only its own cells are touched from."""
        height, width = levels.shape
        rows, cols = -(-height // CELL), -(-width // CELL)
        if (rows * CELL, cols * CELL) != levels.shape:
            whole = np.full((rows * CELL, cols * CELL), 2, np.uint8)
            whole[:height, :width] = levels
            levels = whole
        fill_cells = (levels == 2).reshape(rows, CELL, cols, CELL).all(axis=(1, 3))
        side = self.cells  # squares reaching past the array: padded with fill cells
        padded = np.pad(fill_cells, side - 1, constant_values=True).view(np.uint8)
        # a cell-level opening by a side x side square: anchored at each cell (origin -side//2 puts the
        # window at [i, i + side)), then spread back over the windows that hold each cell
        anchored = ndimage.minimum_filter(padded, size=side, origin=-(side // 2))
        collar_cells = ndimage.maximum_filter(anchored, size=side, origin=(side - 1) // 2)
        inside = collar_cells[side - 1 : 1 - side or None, side - 1 : 1 - side or None]
        touching = ndimage.maximum_filter(inside, size=3, mode="constant", cval=0)
        per_pixel = np.broadcast_to(touching.view(bool)[:, None, :, None], (rows, CELL, cols, CELL))
        return (per_pixel.reshape(levels.shape) & (levels > 0))[:height, :width]


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
        if not (fill == 2).any() and not self._smear_by_sides(fill):
            return
        frame = self.rule.reach
        # the box grown by the frame, out to the lattice, within the raster
        row0, col0 = max(0, (box.row0 - frame) // CELL * CELL), max(0, (box.col0 - frame) // CELL * CELL)
        row1 = min(self.info.height, -(-(box.row1 + frame) // CELL) * CELL)
        col1 = min(self.info.width, -(-(box.col1 + frame) // CELL) * CELL)
        framed = np.zeros((row1 - row0, col1 - col0), np.uint8)
        inside = (slice(box.row0 - row0, box.row1 - row0), slice(box.col0 - col0, box.col1 - col0))
        framed[inside] = fill
        # a side is read only where fill comes within the frame of it: a fill square or cell that
        # crosses a side holds box pixels near it, so with none there, what lies beyond changes nothing
        strips = {  # (rows, cols) on the raster, half-open, if wanted
            (row0, box.row0, col0, col1): box.row0 > row0 and fill[:frame].any(),
            (box.row1, row1, col0, col1): row1 > box.row1 and fill[-frame:].any(),
            (box.row0, box.row1, col0, box.col0): box.col0 > col0 and fill[:, :frame].any(),
            (box.row0, box.row1, box.col1, col1): col1 > box.col1 and fill[:, -frame:].any(),
        }
        for (r0, r1, c0, c1), wanted in strips.items():
            if wanted:
                framed[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = self._fill_of(r0, r1, c0, c1)
        valid &= ~self.rule.collar(framed)[inside]

    @staticmethod
    def _smear_by_sides(fill: np.ndarray) -> bool:
        """Whether fill or smear colour lies within two cells of the box's sides: with no fill in the
        box, only a collar cell beyond them could claim a pixel, and only from its touching cells."""
        band = 2 * CELL
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
