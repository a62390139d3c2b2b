"""One crack from the pieces a mask breaks it into: pieces whose ends face each other across a short
gap are linked into one crack (``crack_id``), the mask itself left as the model drew it.

A segmentation mask loses a crack where it fades for a few pixels, so one crack on the drone wall
comes out as three or four pieces (``bench/crack_types.py``): counted as that many cracks, each
typed on its own (a short piece of a meandering crack runs any way). Two pieces are one crack when
an end of each lies within ``gap_px`` of the other's, each end runs toward the other (within
``max_turn_deg`` of the line joining them) and the two run on in one direction: the way an
inspector reads a crack across a faint stretch. Pieces that merely lie side by side, or meet at an
angle, stay separate cracks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import DisjointSet
from scipy.spatial import cKDTree

MAX_TURN_DEG = 45.0  # each end must point at the other within this (an end's direction is read from ~6 px)
TOUCH_PX = 3.0  # tips this close are one crack whatever their directions (a gap too short to say which way)


@dataclass(frozen=True)
class PieceEnd:
    """An end of one piece in the raster's pixels: tip (col, row) and the unit direction out of the piece."""

    piece: int
    col: float
    row: float
    d_col: float
    d_row: float


def _joins(a: PieceEnd, b: PieceEnd, cos_turn: float) -> bool:
    """Whether two ends face each other: each points along the gap toward the other."""
    gap_col, gap_row = b.col - a.col, b.row - a.row
    gap = math.hypot(gap_col, gap_row)
    if gap <= TOUCH_PX:
        return True
    u_col, u_row = gap_col / gap, gap_row / gap
    return a.d_col * u_col + a.d_row * u_row >= cos_turn and -(b.d_col * u_col + b.d_row * u_row) >= cos_turn


def link_pieces(
    ends: list[PieceEnd],
    pieces: list[int],
    gap_px: float,
    max_turn_deg: float = MAX_TURN_DEG,
    joined: Sequence[tuple[int, int]] = (),
) -> dict[int, int]:
    """The crack each piece belongs to: the smallest piece id of its linked group (a piece on its own
    is its own crack). ``gap_px`` <= 0 links nothing; ``joined``: pairs of pieces that are one crack
    whatever their ends (the pieces a network too large to measure at once was cut into)."""
    cracks = DisjointSet(pieces)
    for a, b in joined:
        cracks.merge(a, b)

    if gap_px > 0 and len(ends) > 1:
        cos_turn = math.cos(math.radians(max_turn_deg))
        tree = cKDTree(np.array([(end.col, end.row) for end in ends]))
        candidates = sorted(
            tree.query_pairs(gap_px, output_type="set"),
            key=lambda pair: math.hypot(ends[pair[0]].col - ends[pair[1]].col, ends[pair[0]].row - ends[pair[1]].row),
        )
        taken: set[int] = set()  # an end links once, to its nearest facing end
        for i, j in candidates:
            a, b = ends[i], ends[j]
            if a.piece == b.piece or i in taken or j in taken or not _joins(a, b, cos_turn):
                continue
            taken |= {i, j}
            cracks.merge(a.piece, b.piece)
    lowest = {piece: min(group) for group in cracks.subsets() for piece in group}
    return {piece: lowest[piece] for piece in pieces}
