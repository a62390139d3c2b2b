"""Vector shapes burnt into class-id windows of a raster grid, window by window (memory flat in raster size)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio.features
import rasterio.windows
import shapely
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from pipeline.raster.grid import Box


@dataclass(frozen=True)
class Shapes:
    """Geometries in the raster's CRS, each with the value it burns; later shapes win where they overlap."""

    geometries: Sequence[BaseGeometry]
    values: Sequence[int]
    tree: STRtree = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tree", STRtree(list(self.geometries)))

    def __len__(self) -> int:
        return len(self.geometries)

    def burn(self, out: np.ndarray, transform: Any) -> np.ndarray:
        """Burn the shapes that touch ``out``'s window (``transform``: its georeference) in order."""
        if not len(self):
            return out
        rows, cols = out.shape
        bounds = rasterio.transform.array_bounds(rows, cols, transform)
        hits = sorted(int(i) for i in self.tree.query(shapely.box(*bounds)))
        if hits:
            rasterio.features.rasterize(
                [(self.geometries[i], int(self.values[i])) for i in hits], out=out, transform=transform
            )
        return out

    def cover(self, shape: tuple[int, int], transform: Any) -> np.ndarray:
        """Bool (rows, cols): the pixels whose centre any shape covers."""
        return self.burn(np.zeros(shape, dtype=np.uint8), transform) > 0


def line_areas(lines: Sequence[BaseGeometry], widths: Sequence[float]) -> list[BaseGeometry]:
    """Lines as the areas they cover: each buffered to half its width (round ends reach the drawn end points)."""
    return [shapely.buffer(line, width / 2, cap_style="round") for line, width in zip(lines, widths, strict=True)]


def windows(width: int, height: int, block: int) -> Iterator[Box]:
    """The raster cut into block x block windows, row by row."""
    for row0 in range(0, height, block):
        for col0 in range(0, width, block):
            yield Box(row0, col0, min(row0 + block, height), min(col0 + block, width))


def window_transform(box: Box, transform: Any) -> Any:
    """The georeference of one window of a raster."""
    return rasterio.windows.transform(box.window, transform)
