"""Per-defect measurements in real units: area, crack length and width, orientation, confidence.

Each defect is rasterised back into a window around its own bounds (exact, since polygon edges lie
on pixel edges), so measurements depend only on the defect, not on how the mask was processed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import LineString, MultiLineString, MultiPolygon, Polygon
from skimage.morphology import remove_small_holes, skeletonize

from pipeline.raster.ground import PixelSize

ORTHOGONAL = ((0, 1), (1, 0))
DIAGONAL = ((1, 1), (1, -1))


CHUNK_PX = 20  # centreline pieces with a width of their own (the crack_centerlines segments)
STAIRCASE_PX = 0.75  # a pixel chain's length is measured along it simplified by this much (not step by step)


@dataclass(frozen=True)
class CrackEnd:
    """Where a crack's centreline stops, in its window's pixels: the tip (column, row of the point,
    carried out to the mask's edge) and the unit direction the crack runs out of it."""

    col: float
    row: float
    d_col: float
    d_row: float


@dataclass(frozen=True)
class CrackMeasure:
    """Centreline, length and mask-based width profile of one crack, cut into chunks of ~CHUNK_PX."""

    length_m: float
    mean_width_mm: float
    max_width_mm: float
    orientation_deg: float
    cells: int  # closed blocks of intact surface the crack runs around (a network: map cracking)
    centerline: MultiLineString
    skeleton: np.ndarray
    chunk_of: np.ndarray  # chunk id per window pixel on the skeleton, -1 elsewhere
    chunk_length_px: np.ndarray
    chunk_width_mm: np.ndarray  # mask-based width per chunk
    chunk_lines: list[MultiLineString]
    ends: list[CrackEnd]

    @property
    def length_px(self) -> float:
        """Centreline length in pixels."""
        return float(self.chunk_length_px.sum())

    def kept(self) -> KeptCrack:
        """What a report keeps of it once its window has been read."""
        rows, cols = np.nonzero(self.skeleton)
        return KeptCrack(
            self.length_m,
            self.mean_width_mm,
            self.max_width_mm,
            self.orientation_deg,
            self.cells,
            rows.astype(np.int32),
            cols.astype(np.int32),
            self.chunk_length_px,
            self.chunk_width_mm,
            self.chunk_lines,
            self.ends,
        )


@dataclass(frozen=True)
class KeptCrack:
    """A measured crack as a report keeps it until every crack is measured: its centreline pixels as
    coordinates, not window-sized arrays (a crack network's window holds millions of pixels, and a
    report holds every crack at once to link and type them)."""

    length_m: float
    mean_width_mm: float  # from the mask
    max_width_mm: float
    orientation_deg: float
    cells: int
    skeleton_rows: np.ndarray  # centreline pixels in its window
    skeleton_cols: np.ndarray
    chunk_length_px: np.ndarray
    chunk_width_mm: np.ndarray
    chunk_lines: list[MultiLineString]
    ends: list[CrackEnd]


def pixel_bounds(geometry: Polygon | MultiPolygon, transform: Affine) -> tuple[int, int, int, int]:
    """(col0, row0, col1, row1): the pixels a pixel-edge geometry covers, end exclusive."""
    minx, miny, maxx, maxy = geometry.bounds
    corners = [~transform @ (x, y) for x in (minx, maxx) for y in (miny, maxy)]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    return (
        math.floor(min(cols) + 1e-6),
        math.floor(min(rows) + 1e-6),
        math.ceil(max(cols) - 1e-6),
        math.ceil(max(rows) - 1e-6),
    )


def defect_window(geometry: Polygon, transform: Affine, width: int, height: int, pad: int = 1) -> Window:
    """Pixel window covering a geometry plus ``pad`` pixels, clipped to the raster."""
    col0, row0, col1, row1 = pixel_bounds(geometry, transform)
    col0, row0 = max(0, col0 - pad), max(0, row0 - pad)
    col1, row1 = min(width, col1 + pad), min(height, row1 + pad)
    return Window(col0, row0, col1 - col0, row1 - row0)


def rasterize_defect(geometry: Polygon, window: Window, transform: Affine) -> np.ndarray:
    """Boolean pixels of a defect inside ``window`` (pixel-centre rule: exact for pixel-edge polygons)."""
    return rasterio.features.rasterize(
        [(geometry, 1)],
        out_shape=(int(window.height), int(window.width)),
        transform=rasterio.windows.transform(window, transform),
        fill=0,
        dtype="uint8",
    ).astype(bool)


def _skeleton_edges(skeleton: np.ndarray) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Neighbour pairs of the skeleton graph; a diagonal pair is skipped where an orthogonal
    path already joins the two pixels, so staircase corners are not counted twice."""
    rows, cols = np.nonzero(skeleton)
    on = set(zip(rows.tolist(), cols.tolist(), strict=True))
    edges = []
    for r, c in on:
        for dr, dc in ORTHOGONAL:
            if (r + dr, c + dc) in on:
                edges.append(((r, c), (r + dr, c + dc)))
        for dr, dc in DIAGONAL:
            if (r + dr, c + dc) in on and (r + dr, c) not in on and (r, c + dc) not in on:
                edges.append(((r, c), (r + dr, c + dc)))
    return edges


def _neighbours(edges: list) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Adjacency of the skeleton graph: each pixel's linked pixels."""
    neighbours: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    return neighbours


def _chunks(skeleton: np.ndarray, edges: list) -> np.ndarray:
    """Chunk id per skeleton pixel: a walk along the skeleton graph from an end, cut every CHUNK_PX."""
    neighbours = _neighbours(edges)
    pixels = sorted(zip(*np.nonzero(skeleton), strict=True))
    chunk_of = np.full(skeleton.shape, -1, np.int64)
    order = 0
    ends = [p for p in pixels if len(neighbours.get(p, [])) <= 1]
    for start in ends + pixels:
        if chunk_of[start] >= 0:
            continue
        queue = [start]
        chunk_of[start] = order // CHUNK_PX
        order += 1
        while queue:  # depth-first: consecutive pixels of a branch stay in one chunk
            here = queue.pop()
            for there in sorted(neighbours.get(here, [])):
                if chunk_of[there] < 0:
                    chunk_of[there] = order // CHUNK_PX
                    order += 1
                    queue.append(there)
        order = -(-order // CHUNK_PX) * CHUNK_PX  # a new piece starts a new chunk
    return chunk_of


def _as_multiline(lines: list[LineString]) -> MultiLineString:
    """The lines merged end to end (shapely's vectorised constructors: a crack has thousands of
    one-pixel segments, and building them one by one was a fifth of a report's time)."""
    merged = shapely.line_merge(shapely.multilinestrings(lines)) if lines else MultiLineString()
    return shapely.multilinestrings([merged]) if isinstance(merged, LineString) else merged


def _padded_distance(pixels: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the background, on the mask padded by one pixel (its edge is background)."""
    return ndimage.distance_transform_edt(np.pad(pixels, 1))


EIGHT = np.ones((3, 3), bool)


def _touching_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unique (label in a, label in b) pairs of 8-neighbouring pixels, both labels > 0."""
    pa, pb = np.pad(a, 1), np.pad(b, 1)
    height, width = a.shape
    pairs = []
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            shifted = pb[1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width]
            both = (pa[1:-1, 1:-1] > 0) & (shifted > 0)
            pairs.append(np.stack([pa[1:-1, 1:-1][both], shifted[both]], axis=1))
    return np.unique(np.concatenate(pairs), axis=0)


def prune_spurs(
    skeleton: np.ndarray, pixels: np.ndarray, rounds: int = 16, distance: np.ndarray | None = None
) -> np.ndarray:
    """The skeleton without end branches shorter than the crack's width where they leave it.

    The medial axis of a wide or jagged mask grows a spur to every corner and edge bump; their
    length follows pixel noise (and changes when the mask is resampled into another CRS), not the
    crack. An end branch (one that meets the rest at a single junction) shorter than the mask's
    width at that junction is such a spur. Where only end branches meet (a star), the two longest
    stay: the main path. ``distance``: ``_padded_distance(pixels)`` when the caller has it.
    """
    width = 2 * (_padded_distance(pixels) if distance is None else distance)[1:-1, 1:-1]
    skeleton = skeleton.copy()
    for _ in range(rounds):
        degree = ndimage.convolve(skeleton.astype(np.int64), EIGHT.astype(np.int64), mode="constant") - 1
        junctions = skeleton & (degree >= 3)
        if not junctions.any():
            break
        branches, count = ndimage.label(skeleton & ~junctions, EIGHT)
        clusters, _ = ndimage.label(junctions, EIGHT)
        pairs = _touching_pairs(branches, clusters)
        if not len(pairs):
            break
        meets = np.bincount(pairs[:, 0], minlength=count + 1)  # junctions each branch meets
        # the widest width in each junction cluster, over the junction pixels only (ndimage.maximum
        # with an index sorts the whole window: most of a long crack's pruning time)
        cluster_width = np.zeros(int(clusters.max()) + 1)
        in_cluster = clusters > 0
        np.maximum.at(cluster_width, clusters[in_cluster], width[in_cluster])
        reach = np.zeros(count + 1)
        np.maximum.at(reach, pairs[:, 0], cluster_width[pairs[:, 1]])
        lengths = np.bincount(branches.ravel(), minlength=count + 1)
        spurs = (meets == 1) & (lengths < reach)
        spurs[0] = False
        if spurs[1:].all():  # a star of short arms: keep its two longest
            spurs[np.argsort(lengths[1:])[-2:] + 1] = False
        if not spurs.any():
            break
        skeleton &= ~spurs[branches]
    return skeleton


def _end_extensions(distance: np.ndarray, edges: list) -> list[tuple[tuple[int, int], tuple[float, float], float]]:
    """(end pixel, unit direction (rows, cols), px >= 0) that carry each centreline end out to the mask's edge.

    Thinning stops half a width short of each end of a crack: a 3 px crack loses ~3 px of length,
    a wide region most of its own (and where it stops depends on pixel noise). Each end is carried
    on along its last few pixels' direction by its distance to the mask's edge (half the width
    for a crack's end, the distance to its short side for a wide region's medial axis).
    ``distance``: ``_padded_distance`` of the crack's pixels."""
    neighbours = _neighbours(edges)
    extensions: list[tuple[tuple[int, int], tuple[float, float], float]] = []
    for end, around in neighbours.items():
        if len(around) != 1:
            continue
        path, previous = [end], None
        while len(path) < 6:  # walk back along the branch for the end's direction
            here = path[-1]
            onward = [p for p in neighbours[here] if p != previous and p not in path]
            if len(onward) != 1:
                break
            previous, path = here, [*path, onward[0]]
        steps = (end[0] - path[-1][0], end[1] - path[-1][1])
        norm = math.hypot(*steps)
        reach = float(distance[end[0] + 1, end[1] + 1]) - 0.5  # from the end pixel's centre to the mask's edge
        if norm > 0:
            extensions.append((end, (steps[0] / norm, steps[1] / norm), max(reach, 0.0)))
    return extensions


def _hole_limit(distance: np.ndarray) -> int:
    """Area (px) below which a hole is a speck: the square of the crack's widest width
    (``distance``: ``_padded_distance`` of its pixels)."""
    widest = 2 * float(distance.max())
    return max(4, int(widest**2))


def measure_crack(pixels: np.ndarray, window_transform: Affine, size: PixelSize) -> CrackMeasure:
    """Skeleton length (m) along the graph (spurs pruned), width (mm) from the distance transform along it.

    Holes smaller than the crack is wide are filled first (a speck of background inside a wide
    crack would loop the centreline around it); the enclosed blocks of a crack network stay."""
    distance = _padded_distance(pixels)  # the hole limit, the pruning, the ends and the widths read it
    filled = remove_small_holes(pixels, max_size=_hole_limit(distance))
    if not np.array_equal(filled, pixels):  # most cracks hold no speck: their distances stand
        distance = _padded_distance(filled)
    pixels = filled
    skeleton = skeletonize(pixels)
    # a single pixel or a blob that thins to nothing keeps its pixels
    skeleton = prune_spurs(skeleton, pixels, distance=distance) if skeleton.any() else pixels.copy()
    edges = _skeleton_edges(skeleton)
    chunk_of = _chunks(skeleton, edges)
    chunks = int(chunk_of.max()) + 1
    chunk_pixels: list[list[LineString]] = [[] for _ in range(chunks)]  # in (col, row) pixel centres
    if edges:
        ends_rc = np.array(edges)  # (edge, end, (row, col))
        owner = np.minimum(chunk_of[ends_rc[:, 0, 0], ends_rc[:, 0, 1]], chunk_of[ends_rc[:, 1, 0], ends_rc[:, 1, 1]])
        for chunk, segment in zip(owner.tolist(), shapely.linestrings(ends_rc[:, :, ::-1].astype(float)), strict=True):
            chunk_pixels[chunk].append(segment)
    extensions = _end_extensions(distance, edges)
    ends = [CrackEnd(c + 0.5 + dc * reach, r + 0.5 + dr * reach, dc, dr) for (r, c), (dr, dc), reach in extensions]
    for (r, c), (dr, dc), reach in extensions:
        if reach > 0:
            chunk_pixels[chunk_of[r, c]].append(LineString([(c, r), (c + dc * reach, r + dr * reach)]))
    chunk_length_px = np.zeros(chunks)
    chunk_segments: list[list[LineString]] = [[] for _ in range(chunks)]
    length = 0.0
    to_map = window_transform @ Affine.translation(0.5, 0.5)  # (col, row) of a pixel centre -> map
    for chunk, lines in enumerate(chunk_pixels):
        for line in _as_multiline(lines).geoms:
            path = np.asarray(line.simplify(STAIRCASE_PX).coords)  # the staircase off: its true course
            steps = np.diff(path, axis=0)
            chunk_length_px[chunk] += float(np.hypot(steps[:, 0], steps[:, 1]).sum())
            length += float(np.hypot(steps[:, 0] * size.x_m, steps[:, 1] * size.y_m).sum())
            xy = shapely.get_coordinates(line)
            chunk_segments[chunk].append(shapely.linestrings(np.column_stack(to_map @ (xy[:, 0], xy[:, 1]))))
    chunk_length_px = np.maximum(chunk_length_px, 1.0)  # a lone pixel still spans one pixel
    widths_px = local_widths_px(skeleton, distance)
    widths_mm = widths_px * size.mean_m * 1000
    rows, cols = np.nonzero(skeleton)
    orientation, _ = main_axis(rows, cols, size)
    linked = {pixel for edge in edges for pixel in edge}
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        if (r, c) not in linked:  # a blob that thins to a lone pixel: a one-pixel line along the main axis
            chunk_segments[chunk_of[r, c]].append(_pixel_line(r, c, orientation, window_transform))
    chunk_width_mm = np.bincount(chunk_of[rows, cols], weights=widths_mm, minlength=chunks) / np.maximum(
        np.bincount(chunk_of[rows, cols], minlength=chunks), 1
    )
    area_mm2 = pixels.sum() * size.area_m2 * 1e6
    # mean width = area / length (exact for a straight crack of any width); dt profile if too short
    mean_width = area_mm2 / (length * 1000) if length >= 2 * size.mean_m else float(widths_mm.mean())
    centerline = _as_multiline([line for lines in chunk_segments for line in lines])
    return CrackMeasure(
        length,
        mean_width,
        float(max(widths_mm.max(), mean_width)),
        orientation,
        _enclosed_cells(pixels),
        centerline,
        skeleton,
        chunk_of,
        chunk_length_px,
        chunk_width_mm,
        [_as_multiline(lines) for lines in chunk_segments],
        ends,
    )


def main_axis(rows: np.ndarray, cols: np.ndarray, size: PixelSize) -> tuple[float, float]:
    """Azimuth (degrees, 0 = north, clockwise, in [0, 180)) of the main axis of skeleton pixels, and
    their spread: the extent across that axis over the extent along it (0 for a straight line)."""
    points = np.column_stack([cols * size.x_m, -rows * size.y_m])
    if len(points) < 2:
        return 0.0, 0.0
    centred = points - points.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    east, north = vt[0]
    spread = float(singular[1] / singular[0]) if len(singular) > 1 and singular[0] > 0 else 0.0
    return math.degrees(math.atan2(east, north)) % 180, spread


def _enclosed_cells(pixels: np.ndarray) -> int:
    """Background regions the crack closes in (4-connected, so a diagonal step of the 8-connected
    crack closes them); the specks a wide crack holds are filled before this is called."""
    _, regions = ndimage.label(~np.pad(pixels, 1))
    return max(regions - 1, 0)  # the padded border joins everything outside into one region


def _pixel_line(row: int, col: int, azimuth: float, window_transform: Affine) -> LineString:
    """A one-pixel-long line through a pixel's centre along ``azimuth`` (the length a lone pixel spans)."""
    d_col, d_row = 0.5 * math.sin(math.radians(azimuth)), -0.5 * math.cos(math.radians(azimuth))
    return LineString(
        [
            window_transform @ (col + 0.5 - d_col, row + 0.5 - d_row),
            window_transform @ (col + 0.5 + d_col, row + 0.5 + d_row),
        ]
    )


def local_widths_px(skeleton: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Crack width (px) at each skeleton pixel from the distance transform.

    A centre pixel at distance d from the background sees a width of 2d - 1; when the crack is an
    even number of pixels wide the skeleton sits on one of two equally central pixels, recognised
    by an off-skeleton 4-neighbour at least as far from the background, and the width is 2d.
    ``distance``: ``_padded_distance`` of the crack's pixels.
    """
    skel = np.pad(skeleton, 1)
    rows, cols = np.nonzero(skel)
    centre = distance[rows, cols]
    twin = np.zeros(len(rows), bool)
    for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        r, c = rows + dr, cols + dc
        twin |= ~skel[r, c] & (distance[r, c] >= centre)
    return np.maximum(2 * centre - 1 + twin, 1.0)
