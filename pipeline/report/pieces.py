"""A crack network larger than a measuring window, cut into pieces on a fixed grid of the raster.

A crack is measured on a window around it (``pipeline.report.measure``, ``pipeline.report.width``):
dozens of bytes per pixel of that window. Map cracking on a deck joins into one 8-connected network
metres across, whose window is the whole deck: 4.5 GB and 41 s for one network spanning an 8192²
mask, quadratic in its side. Such a component is cut along the lines of a grid of
``report.max_piece_px`` squares fixed to the raster's origin; each piece is measured on its own
window (memory bounded by the square, whatever the raster) and the pieces are one crack again in
the report (one ``crack_id``, typed as a whole). A piece's centreline runs to the cut, so the
pieces' lengths add up to the network's; cracks smaller than the square are never cut.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import shapely
from affine import Affine
from shapely.affinity import affine_transform
from shapely.geometry import MultiPolygon, Polygon

from pipeline.report.measure import pixel_bounds
from pipeline.report.vectorize import Component


def _squares(bounds: tuple[int, int, int, int], side: int) -> Iterator[tuple[int, int, int, int]]:
    """The grid squares (col0, row0, col1, row1) that meet ``bounds``, row by row."""
    col0, row0, col1, row1 = bounds
    for row in range(row0 // side * side, row1, side):
        for col in range(col0 // side * side, col1, side):
            yield col, row, col + side, row + side


def cut_large(components: Sequence[Component], transform: Affine, side_px: int, classes: set[int]) -> list[Component]:
    """``components`` with each one of ``classes`` wider or taller than ``side_px`` replaced by its
    pieces in the grid's squares (row by row; ``piece_of`` numbers the component they were cut from)."""
    to_crs = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    out: list[Component] = []
    for number, component in enumerate(components, start=1):
        bounds = pixel_bounds(component.geometry, transform)
        if component.class_id not in classes or max(bounds[2] - bounds[0], bounds[3] - bounds[1]) <= side_px:
            out.append(component)
            continue
        for col0, row0, col1, row1 in _squares(bounds, side_px):
            square = affine_transform(shapely.box(col0, row0, col1, row1), to_crs)
            part = shapely.intersection(component.geometry, square)
            polygons = [g for g in getattr(part, "geoms", [part]) if isinstance(g, Polygon) and not g.is_empty]
            if not polygons:
                continue
            piece = shapely.normalize(polygons[0] if len(polygons) == 1 else MultiPolygon(polygons))
            pixels = round(piece.area / pixel_area)
            out.append(Component(component.class_id, piece, pixels, piece_of=number, square=(col0, row0, col1, row1)))
    return out
