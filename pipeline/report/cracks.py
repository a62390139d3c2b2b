"""One row per crack: the pieces that share a ``crack_id`` rolled up into the crack an inspector
names, measures and rates (the ``cracks`` layer of defects.gpkg).

The defects layer keeps one row per connected piece of mask: a crack the mask lost for a few
pixels (``linking.py``) or a network cut into squares to be measured (``pieces.py``) is several
rows there. An inspection record lists cracks: how long, how wide at the widest, how bad, where.
Each crack here is its pieces' centrelines as one line, their lengths summed, the widest piece's
width and rating, and the length-weighted mean width.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.spatial import cKDTree
from shapely.geometry import MultiLineString

from pipeline.report.defects import SEVERITIES

CRACK_COLUMNS = [
    "crack_id",
    "class",
    "severity",
    "crack_type",
    "angle_to_axis_deg",
    "pieces",
    "length_m",
    "mean_width_mm",
    "max_width_mm",
    "width_method",
    "area_m2",
    "elements",
    "defect_ids",
]
CRACKS_LAYER = "cracks"
CRACKS_GEOMETRY = "MultiLineString"  # what the layer says it holds, also when empty


def _centrelines(
    centerlines: gpd.GeoDataFrame, crack_of: pd.Series, cracks: pd.Index, pieces: gpd.GeoDataFrame
) -> np.ndarray:
    """Per crack of ``cracks``, its pieces' centreline segments merged end to end into as few lines as
    they make, the ends a cut left apart joined (``_across_cuts``); one vectorised pass: a bridge's
    survey holds tens of thousands of cracks."""
    owner = centerlines["defect_id"].map(crack_of).to_numpy()
    mine = np.isin(owner, cracks.to_numpy())
    parts, index = shapely.get_parts(centerlines.geometry.to_numpy()[mine], return_index=True)
    position = cracks.get_indexer(owner[mine][index])
    lines = np.full(len(cracks), MultiLineString(), dtype=object)
    if len(parts):
        joined = _merged(parts, position)
        merged, crack = shapely.get_parts(joined, return_index=True)
        bridges, bridged = _across_cuts(merged, crack, cracks, pieces)
        if len(bridges):
            joined = _merged(np.concatenate([merged, bridges]), np.concatenate([crack, bridged]))
        lines[: len(joined)] = joined
    single = shapely.get_type_id(lines) == shapely.GeometryType.LINESTRING
    lines[single] = shapely.multilinestrings(shapely.get_parts(lines[single]), indices=np.arange(single.sum()))
    return lines


def _merged(parts: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The lines of each position merged end to end: one collection per position up to the largest,
    empty where a position has none."""
    order = np.argsort(position, kind="stable")
    return shapely.line_merge(shapely.multilinestrings(parts[order], indices=position[order]))


def _across_cuts(
    lines: np.ndarray, crack: np.ndarray, cracks: pd.Index, pieces: gpd.GeoDataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Short lines joining the ends a cut left apart, and the position of each one's crack.

    A network cut into squares to be measured (``pieces.py``) has each piece's centreline stop a
    pixel or two short of the cut, so a crack running across it was drawn in two parts. Two ends
    of one crack's lines within 3 px of each other, each the other's nearest, are joined when the
    mask holds crack between them (the joining line's middle is on one of the crack's pieces): a
    gap the mask left (``linking.py``) has no crack pixel in it, and stays a gap."""
    none = np.empty(0, dtype=object), np.empty(0, dtype=int)
    if len(lines) < 2:
        return none
    ends = np.concatenate([shapely.get_point(lines, 0), shapely.get_point(lines, -1)])
    xy = shapely.get_coordinates(ends)
    of_line = np.tile(np.arange(len(lines)), 2)
    pixel = float(np.median(np.sqrt(pieces.geometry.area / pieces["pixels"])))
    pairs = cKDTree(xy).query_pairs(3 * pixel, output_type="ndarray")
    first, second = pairs[:, 0], pairs[:, 1]
    distance = np.hypot(*(xy[first] - xy[second]).T)
    keep = (crack[of_line[first]] == crack[of_line[second]]) & (of_line[first] != of_line[second]) & (distance > 0)
    first, second, distance = first[keep], second[keep], distance[keep]
    if not len(first):
        return none
    # each end's nearest partner; a pair is joined when each is the other's
    ends_both = np.concatenate([first, second])
    partner = np.concatenate([second, first])
    nearest = pd.Series(np.tile(distance, 2)).groupby(ends_both).idxmin()
    best = pd.Series(partner[nearest.to_numpy()], index=nearest.index)
    mutual = best.reindex(best.to_numpy()).to_numpy() == best.index.to_numpy()
    start, end = best.index.to_numpy()[mutual], best.to_numpy()[mutual]
    once = start < end
    start, end = start[once], end[once]
    bridges = shapely.linestrings(np.stack([xy[start], xy[end]], axis=1))
    middles = shapely.line_interpolate_point(bridges, 0.5, normalized=True)
    owners = cracks.get_indexer(pieces["crack_id"].to_numpy())
    found, piece = shapely.STRtree(pieces.geometry.to_numpy()).query(middles, predicate="intersects")
    on_crack = np.zeros(len(bridges), bool)
    on_crack[found[owners[piece] == crack[of_line[start[found]]]]] = True
    return bridges[on_crack], crack[of_line[start[on_crack]]]


def cracks_of(defects: gpd.GeoDataFrame, centerlines: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The ``cracks`` layer: one row per ``crack_id`` of ``defects``, in ``crack_id`` order, drawn as
    its pieces' ``centerlines`` merged; rated as its widest piece is (as its worst piece when no
    piece has a width)."""
    cracked = defects[defects["crack_id"] > 0]
    pieces = pd.DataFrame(cracked.drop(columns="geometry"))
    per = pieces.groupby("crack_id", sort=True)
    cracks = pd.Index(sorted(pieces["crack_id"].unique()), name="crack_id")
    longest = pieces.loc[pieces["length_m"].fillna(0).groupby(pieces["crack_id"]).idxmax()].set_index("crack_id")
    measured = pieces[pieces["max_width_mm"].notna()]
    widest = measured.loc[measured.groupby("crack_id")["max_width_mm"].idxmax()].set_index("crack_id")
    rank = pieces["severity"].map(SEVERITIES.index).groupby(pieces["crack_id"]).max()
    with_width = pieces[pieces["mean_width_mm"].notna() & (pieces["length_m"] > 0)]
    weighted = (with_width["mean_width_mm"] * with_width["length_m"]).groupby(with_width["crack_id"]).sum()
    frame = pd.DataFrame(
        {
            "class": longest["class"],
            "severity": widest["severity"].reindex(cracks).fillna(rank.map(lambda i: SEVERITIES[i])),
            "crack_type": longest["crack_type"],
            "angle_to_axis_deg": longest["angle_to_axis_deg"],
            "pieces": per.size(),
            "length_m": per["length_m"].sum(),
            "mean_width_mm": weighted / with_width.groupby("crack_id")["length_m"].sum(),
            "max_width_mm": widest["max_width_mm"],
            "width_method": widest["width_method"].reindex(cracks).fillna(longest["width_method"]),
            "area_m2": per["area_m2"].sum(),
            "elements": per["element"].agg(lambda names: ",".join(sorted({name for name in names if name}))),
            "defect_ids": per["defect_id"].agg(lambda ids: ",".join(str(i) for i in sorted(ids))),
        },
        index=cracks,
    ).reset_index()
    crack_of = pieces.set_index("defect_id")["crack_id"]
    frame["geometry"] = _centrelines(centerlines, crack_of, cracks, cracked)
    frame = frame[[*CRACK_COLUMNS, "geometry"]].astype({"crack_id": "int64", "pieces": "int64"})
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=defects.crs)
