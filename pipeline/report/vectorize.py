"""Connected defects of a class mask -> exact pixel-edge polygons, window by window.

The mask is read in full-width strips (memory bounded by the strip, not the raster). Each strip
is labelled per class with 8-connectivity; components that continue across a strip edge are
joined with a union-find, and their polygon pieces (which share exact pixel edges) are unioned.
The result is the same set of defects, with the same geometry, as polygonising the whole raster
at once, whatever the strip height.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage
from scipy.cluster.hierarchy import DisjointSet
from shapely.affinity import affine_transform
from shapely.geometry import MultiPolygon, Polygon, shape

from pipeline.class_ids import NO_CLASS
from pipeline.errors import MsafError
from pipeline.processes import in_processes

EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Component:
    """One connected defect: its class and exact polygon (raster CRS), before simplification."""

    class_id: int
    geometry: Polygon | MultiPolygon
    pixels: int
    piece_of: int = 0  # > 0: a piece of a larger component, the same number for all its pieces (pieces.py)
    square: tuple[int, int, int, int] | None = None  # a piece's grid square (col0, row0, col1, row1), pixels


def _raster_ids(row: np.ndarray, offset: int) -> np.ndarray:
    """A row of a strip's labels as the raster's component ids (0 stays background)."""
    return np.where(row > 0, row.astype(np.int64) + offset, 0)


def _strips(height: int, rows: int) -> Iterator[tuple[int, int]]:
    for row0 in range(0, height, rows):
        yield row0, min(row0 + rows, height)


def _read_here(
    mask: rasterio.DatasetReader, row0: int, row1: int, class_ids: Sequence[int], nodata: int, num_classes: int | None
) -> dict[int, _ClassStrip]:
    """``_strip_components`` of rows ``row0:row1`` of ``mask``, its classes checked first."""
    data = mask.read(1, window=Window(0, row0, mask.width, row1 - row0))
    _check_classes(data, mask.name, nodata, num_classes)
    return _strip_components(data, row0, class_ids, nodata)


@dataclass(frozen=True)
class _ClassStrip:
    """One class's components in one strip of the mask, labelled 1..count on their own (the raster's
    id of each is an offset, fixed in strip order, plus its label)."""

    count: int
    first_row: np.ndarray  # the labels of the strip's top row
    last_row: np.ndarray  # and of its bottom row
    pixels: np.ndarray  # pixels per label (index 0: background)
    pieces: list[tuple[int, Polygon]]  # (label, its polygons in the raster's pixel coordinates)


def _check_classes(data: np.ndarray, name: str, nodata: int, num_classes: int | None) -> None:
    if num_classes is None:
        return
    unknown = data[(data != nodata) & (data >= num_classes)]
    if unknown.size:
        raise MsafError(
            f"{name}: holds class id {int(unknown.max())}, but its survey names only "
            f"{num_classes} classes (ids 0-{num_classes - 1}); the mask and survey.json do not "
            "belong together - rerun `msaf survey`"
        )


def _strip_components(data: np.ndarray, row0: int, class_ids: Sequence[int], nodata: int) -> dict[int, _ClassStrip]:
    """Each class's 8-connected components in one strip (``row0``: its first row), by class id; a
    class without any is left out."""
    transform = Affine.translation(0, row0)  # pixel coordinates: exact integers, whatever the strip
    found = {}
    for class_id in class_ids:
        if class_id == nodata:
            continue
        # int32 labels, as GDAL polygonises them: the raster's ids are applied to the edge rows and
        # to each piece, never to the whole strip
        labels, count = ndimage.label(data == class_id, structure=EIGHT_CONNECTED, output=np.int32)
        if count == 0:
            continue
        pieces = [
            (int(value), shape(geom))
            for geom, value in rasterio.features.shapes(labels, mask=labels > 0, connectivity=4, transform=transform)
        ]
        found[class_id] = _ClassStrip(count, labels[0].copy(), labels[-1].copy(), np.bincount(labels.ravel()), pieces)
    return found


def _read_strip_components(
    path: str, driver: str, row0: int, row1: int, class_ids: Sequence[int], nodata: int, num_classes: int | None
) -> dict[int, _ClassStrip]:
    """``_read_here`` on the mask at ``path`` (in a worker process)."""
    with rasterio.open(path, driver=driver) as mask:
        return _read_here(mask, row0, row1, class_ids, nodata, num_classes)


def vectorize(
    mask: rasterio.DatasetReader,
    class_ids: Sequence[int],
    strip_rows: int = 2048,
    nodata: int = NO_CLASS,
    num_classes: int | None = None,
    workers: int = 1,
) -> list[Component]:
    """Polygons of every 8-connected component of each class in ``class_ids``.

    With ``num_classes``, a value outside 0..num_classes-1 (other than nodata) is an error, not a
    silently dropped defect: the mask and its class list do not belong together. ``workers`` >= 2:
    strips are labelled and polygonised in that many processes (the same components).

    Returns components sorted by (class, top row, left column) of their bounds, so ids derived
    from the order are stable.
    """
    strips: Iterable[dict[int, _ClassStrip]]
    rows = list(_strips(mask.height, strip_rows))
    if workers >= 2:
        calls = ((mask.name, mask.driver, r0, r1, tuple(class_ids), nodata, num_classes) for r0, r1 in rows)
        strips = in_processes(_read_strip_components, calls, workers)
    else:
        strips = (_read_here(mask, r0, r1, class_ids, nodata, num_classes) for r0, r1 in rows)
    joined: DisjointSet[int] = DisjointSet()
    pieces: dict[int, list[Polygon]] = defaultdict(list)
    pixels: dict[int, int] = defaultdict(int)
    class_of: dict[int, int] = {}
    next_id = 1
    previous_row: dict[int, np.ndarray] = {}
    for found in strips:
        for class_id in class_ids:
            strip = found.get(class_id)
            if strip is None:
                previous_row.pop(class_id, None)
                continue
            offset = next_id - 1
            for gid in range(next_id, next_id + strip.count):
                class_of[gid] = class_id
                joined.add(gid)
            next_id += strip.count
            above = previous_row.get(class_id)
            if above is not None:
                first = _raster_ids(strip.first_row, offset)
                for shift in (-1, 0, 1):  # 8-connectivity across the strip edge
                    a = above[max(0, -shift) : len(above) - max(0, shift)]
                    b = first[max(0, shift) : len(first) - max(0, -shift)]
                    for x, y in set(zip(a[(a > 0) & (b > 0)].tolist(), b[(a > 0) & (b > 0)].tolist(), strict=True)):
                        joined.merge(x, y)
            previous_row[class_id] = _raster_ids(strip.last_row, offset)
            for label in np.flatnonzero(strip.pixels).tolist():
                if label:
                    pixels[label + offset] += int(strip.pixels[label])
            for label, polygon in strip.pieces:
                pieces[label + offset].append(polygon)
    t = mask.transform
    to_crs = [t.a, t.b, t.d, t.e, t.c, t.f]
    groups: dict[int, list[int]] = defaultdict(list)
    for gid in pieces:
        groups[joined[gid]].append(gid)
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
