"""One global tile grid over a raster, and blocks of work that each own a core window.

Every block computes exactly the global-grid tiles that touch its core and writes only its core,
so the stitched output does not depend on block size or on how many workers ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from rasterio.windows import Window


@dataclass(frozen=True, order=True)
class Box:
    """A pixel rectangle [row0, row1) x [col0, col1) in raster coordinates."""

    row0: int
    col0: int
    row1: int
    col1: int

    @property
    def height(self) -> int:
        """Rows spanned."""
        return self.row1 - self.row0

    @property
    def width(self) -> int:
        """Columns spanned."""
        return self.col1 - self.col0

    @property
    def window(self) -> Window:
        """The same rectangle as a rasterio window."""
        return Window(self.col0, self.row0, self.width, self.height)

    def intersection(self, other: Box) -> Box | None:
        """The overlap of two boxes, or None when they do not overlap."""
        box = Box(
            max(self.row0, other.row0),
            max(self.col0, other.col0),
            min(self.row1, other.row1),
            min(self.col1, other.col1),
        )
        return box if box.height > 0 and box.width > 0 else None

    def relative_to(self, outer: Box) -> tuple[slice, slice]:
        """Array slices of this box inside an array that covers ``outer``."""
        return (
            slice(self.row0 - outer.row0, self.row1 - outer.row0),
            slice(self.col0 - outer.col0, self.col1 - outer.col0),
        )

    def as_list(self) -> list[int]:
        """[row0, col0, row1, col1] (JSON-friendly)."""
        return [self.row0, self.col0, self.row1, self.col1]


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: regular stride, the last tile flush with the far edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


@dataclass(frozen=True)
class TileGrid:
    """The global grid of inference tiles.

    Tiles are ``tile`` px squares (clamped to the raster size, so no tile ever reaches past the
    raster and no padding can leak into the output), overlapping by at least ``overlap`` px.
    """

    height: int
    width: int
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"raster must be at least 1x1, got {self.width}x{self.height}")
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must be in [0, tile), got overlap={self.overlap} tile={self.tile}")

    @property
    def tile_shape(self) -> tuple[int, int]:
        """(rows, cols) of every tile."""
        return min(self.tile, self.height), min(self.tile, self.width)

    @cached_property
    def row_starts(self) -> np.ndarray:
        """First row of each row of tiles (the last one flush with the bottom edge)."""
        return np.array(_starts(self.height, self.tile, self.tile - self.overlap))

    @cached_property
    def col_starts(self) -> np.ndarray:
        """First column of each column of tiles (the last one flush with the right edge)."""
        return np.array(_starts(self.width, self.tile, self.tile - self.overlap))

    def edges(self, tile: Box) -> tuple[bool, bool, bool, bool]:
        """Which sides (top, bottom, left, right) of a tile lie on the raster edge."""
        return tile.row0 == 0, tile.row1 == self.height, tile.col0 == 0, tile.col1 == self.width

    def weights(self, tile: Box) -> np.ndarray:
        """Blend weights of one tile, untapered on the sides that lie on the raster edge."""
        return blend_weights(tile.height, tile.width, self.edges(tile))

    @property
    def n_tiles(self) -> int:
        """Number of tiles in the whole raster."""
        return len(self.row_starts) * len(self.col_starts)

    def _touching(self, starts: np.ndarray, size: int, lo: int, hi: int) -> np.ndarray:
        return starts[(starts < hi) & (starts + size > lo)]

    def tiles_touching(self, core: Box) -> list[Box]:
        """Global tiles that overlap ``core``, in global row-major order."""
        th, tw = self.tile_shape
        rows = self._touching(self.row_starts, th, core.row0, core.row1)
        cols = self._touching(self.col_starts, tw, core.col0, core.col1)
        return [Box(int(r), int(c), int(r) + th, int(c) + tw) for r in rows for c in cols]

    def n_blocks(self, block: int) -> int:
        """How many blocks ``blocks(block)`` makes (cheap: no tile lists)."""
        return -(-self.height // block) * -(-self.width // block)

    def blocks(self, block: int) -> list[Block]:
        """Split the raster into ``block`` x ``block`` cores (edge cores smaller)."""
        if block < 1:
            raise ValueError(f"block size must be >= 1, got {block}")
        out: list[Block] = []
        for row0 in range(0, self.height, block):
            for col0 in range(0, self.width, block):
                core = Box(row0, col0, min(row0 + block, self.height), min(col0 + block, self.width))
                out.append(self.block_for(len(out), core))
        return out

    def block_for(self, index: int, core: Box) -> Block:
        """The block that writes ``core``: the tiles touching it and the region they cover."""
        tiles = self.tiles_touching(core)
        region = Box(
            min(t.row0 for t in tiles),
            min(t.col0 for t in tiles),
            max(t.row1 for t in tiles),
            max(t.col1 for t in tiles),
        )
        return Block(index, core, region, tuple(tiles))


@dataclass(frozen=True)
class Block:
    """A unit of work: the core it writes, the region (core + halo) it reads, the tiles it runs."""

    index: int
    core: Box
    region: Box
    tiles: tuple[Box, ...]

    def iter_tiles(self) -> Iterator[Box]:
        """The block's tiles in global tile order."""
        return iter(self.tiles)


def _axis_weights(n: int, flush_start: bool, flush_end: bool) -> np.ndarray:
    w = 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)
    if flush_start:
        w[: n // 2] = 1.0
    if flush_end:
        w[n // 2 :] = 1.0
    return w.astype(np.float32)


@lru_cache(maxsize=64)
def blend_weights(rows: int, cols: int, edges: tuple[bool, bool, bool, bool] = (False,) * 4) -> np.ndarray:
    """Separable raised-cosine (Hann) weights, strictly positive, peaking at the tile centre.

    Overlapping tiles fade into each other, so their disagreement near tile borders (where the
    network sees least context) leaves no seam. A side lying on the raster edge (``edges`` =
    top, bottom, left, right) has no neighbour to fade into, so it does not taper: otherwise the
    edge tile and the tile beside it would both be weighted by their borders there.
    """
    top, bottom, left, right = edges
    weights = np.outer(_axis_weights(rows, top, bottom), _axis_weights(cols, left, right))
    weights.setflags(write=False)
    return weights
