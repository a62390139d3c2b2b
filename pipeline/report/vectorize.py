"""Connected defects of a class mask -> exact pixel-edge polygons, window by window.

The mask is read in full-width strips (memory bounded by the strip, not the raster). Each strip
is labelled per class with 8-connectivity; components that continue across a strip edge are
joined with a union-find, and their polygon pieces (which share exact pixel edges) are unioned.
The result is the same set of defects, with the same geometry, as polygonising the whole raster
at once, whatever the strip height.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage
from shapely.affinity import affine_transform
from shapely.geometry import MultiPolygon, Polygon, shape

from pipeline.class_ids import NO_CLASS
from pipeline.errors import MsafError

EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Component:
    """One connected defect: its class and exact polygon (raster CRS), before simplification."""

    class_id: int
    geometry: Polygon | MultiPolygon
    pixels: int


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        root = self.parent.setdefault(item, item)
        while root != self.parent[root]:
            root = self.parent[root]
        while item != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _strips(height: int, rows: int) -> Iterator[tuple[int, int]]:
    for row0 in range(0, height, rows):
        yield row0, min(row0 + rows, height)


def vectorize(
    mask: rasterio.DatasetReader,
    class_ids: Sequence[int],
    strip_rows: int = 2048,
    nodata: int = NO_CLASS,
    num_classes: int | None = None,
) -> list[Component]:
    """Polygons of every 8-connected component of each class in ``class_ids``.

    With ``num_classes``, a value outside 0..num_classes-1 (other than nodata) is an error, not a
    silently dropped defect: the mask and its class list do not belong together.

    Returns components sorted by (class, top row, left column) of their bounds, so ids derived
    from the order are stable.
    """
    uf = _UnionFind()
    pieces: dict[int, list[Polygon]] = defaultdict(list)
    pixels: dict[int, int] = defaultdict(int)
    class_of: dict[int, int] = {}
    next_id = 1
    previous_row: dict[int, np.ndarray] = {}
    for row0, row1 in _strips(mask.height, strip_rows):
        window = Window(0, row0, mask.width, row1 - row0)
        data = mask.read(1, window=window)
        if num_classes is not None:
            unknown = data[(data != nodata) & (data >= num_classes)]
            if unknown.size:
                raise MsafError(
                    f"{mask.name}: holds class id {int(unknown.max())}, but its survey names only "
                    f"{num_classes} classes (ids 0-{num_classes - 1}); the mask and survey.json do not "
                    "belong together - rerun `msaf survey`"
                )
        transform = Affine.translation(0, row0)  # pixel coordinates: exact integers, whatever the strip
        for class_id in class_ids:
            if class_id == nodata:
                continue
            labels, count = ndimage.label(data == class_id, structure=EIGHT_CONNECTED)
            if count == 0:
                previous_row.pop(class_id, None)
                continue
            labels = labels.astype(np.int64)
            labels[labels > 0] += next_id - 1
            for gid in range(next_id, next_id + count):
                class_of[gid] = class_id
            next_id += count
            above = previous_row.get(class_id)
            if above is not None:
                first = labels[0]
                for shift in (-1, 0, 1):  # 8-connectivity across the strip edge
                    a = above[max(0, -shift) : len(above) - max(0, shift)]
                    b = first[max(0, shift) : len(first) - max(0, -shift)]
                    for x, y in set(zip(a[(a > 0) & (b > 0)].tolist(), b[(a > 0) & (b > 0)].tolist(), strict=True)):
                        uf.union(x, y)
            previous_row[class_id] = labels[-1].copy()
            counts = np.bincount(labels.ravel())
            for found in np.flatnonzero(counts).tolist():
                if found:
                    pixels[found] += int(counts[found])
            for geom, value in rasterio.features.shapes(
                labels.astype(np.int32), mask=labels > 0, connectivity=4, transform=transform
            ):
                pieces[int(value)].append(shape(geom))
    t = mask.transform
    to_crs = [t.a, t.b, t.d, t.e, t.c, t.f]
    groups: dict[int, list[int]] = defaultdict(list)
    for gid in pieces:
        groups[uf.find(gid)].append(gid)
    keyed = []
    for members in groups.values():
        parts = [poly for gid in members for poly in pieces[gid]]
        in_pixels = shapely.union_all(parts) if len(parts) > 1 else parts[0]
        in_pixels = shapely.simplify(in_pixels, 0)  # drop collinear vertices left on strip seams
        col0, row0 = in_pixels.bounds[:2]
        geometry = shapely.normalize(affine_transform(in_pixels, to_crs))
        keyed.append(
            (
                (class_of[members[0]], row0, col0),
                Component(class_of[members[0]], geometry, sum(pixels[g] for g in members)),
            )
        )
    keyed.sort(key=lambda item: item[0])  # class, then top row, then left column: stable ids
    return [component for _, component in keyed]
