"""Pieces of one crack, broken where the mask lost it, are one crack (``crack_id``); cracks that lie
side by side or meet at an angle stay apart."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import line as draw_line

from pipeline.config import ReportConfig
from pipeline.report.defects import build_defects
from pipeline.report.linking import PieceEnd, link_pieces
from tests.conftest import write_mask_survey

CLASSES = ["background", "crack", "spall"]


def _end(piece: int, col: float, row: float, azimuth_deg: float) -> PieceEnd:
    """An end whose crack runs out of it toward ``azimuth_deg`` (0 = up the rows, 90 = along the columns)."""
    return PieceEnd(piece, col, row, math.sin(math.radians(azimuth_deg)), -math.cos(math.radians(azimuth_deg)))


@pytest.mark.parametrize(
    ("ends", "gap_px", "expected"),
    [
        # two pieces of an east-west crack 12 px apart, their ends facing: one crack
        ([_end(1, 100, 50, 90), _end(2, 112, 51, 270)], 15, {1: 1, 2: 1}),
        # the same gap, but longer than an 8 px limit
        ([_end(1, 100, 50, 90), _end(2, 112, 51, 270)], 8, {1: 1, 2: 2}),
        # side by side: ends 6 px apart across the cracks' direction, both running east
        ([_end(1, 100, 50, 90), _end(2, 100, 56, 90)], 15, {1: 1, 2: 2}),
        # a crack running north ends 10 px from one running east: they meet at an angle
        ([_end(1, 100, 50, 0), _end(2, 110, 50, 270)], 15, {1: 1, 2: 2}),
        # tips 2 px apart: too close to say which way they run, one crack
        ([_end(1, 100, 50, 0), _end(2, 101, 51.5, 90)], 15, {1: 1, 2: 1}),
        # a chain of three: one crack, named after its first piece
        (
            [_end(3, 100, 50, 90), _end(2, 110, 50, 270), _end(2, 150, 50, 90), _end(1, 160, 50, 270)],
            15,
            {1: 1, 2: 1, 3: 1},
        ),
    ],
)
def test_which_ends_join(ends, gap_px, expected):
    assert link_pieces(ends, sorted(expected), gap_px) == expected


def test_an_end_joins_only_its_nearest_facing_end():
    """A crack end faces two pieces ahead (9 and 14 px): it joins the nearer, the farther stays apart."""
    ends = [_end(1, 100, 50, 90), _end(2, 109, 50, 270), _end(3, 114, 51, 270)]
    assert link_pieces(ends, [1, 2, 3], 20.0) == {1: 1, 2: 1, 3: 3}
    assert link_pieces(ends, [1, 2, 3], 0.0) == {1: 1, 2: 2, 3: 3}  # off


def _draw(mask: np.ndarray, points: list[tuple[int, int]]) -> None:
    """A meandering 2-px crack through (row, col) points."""
    course = np.zeros(mask.shape, bool)
    for (r0, c0), (r1, c1) in itertools.pairwise(points):
        rr, cc = draw_line(r0, c0, r1, c1)
        course[rr, cc] = True
    mask[ndimage.binary_dilation(course, structure=np.ones((2, 2), bool))] = 1


def test_a_crack_the_mask_broke_in_three_is_one_crack_of_one_type(tmp_path):
    """A north-south crack broken by gaps of 8 and 15 px (at 1 mm: within 20 mm) is three pieces and
    one transverse crack against an east-west structure; a crack beside it is another."""
    rng = np.random.default_rng(1)
    mask = np.zeros((900, 400), np.uint8)
    meander = [(r, 100 + int(4 * math.sin(r / 40)) + int(rng.integers(-1, 2))) for r in range(50, 851, 25)]
    _draw(mask, meander)
    mask[300:308] = 0  # the mask lost the crack here (8 px)
    mask[600:615] = 0  # and here (15 px)
    _draw(mask, [(200, 160), (700, 162)])  # a straight crack beside it, 60 px east
    survey = write_mask_survey(tmp_path / "survey", mask)
    from pipeline.report.crack_types import StructureAxes

    tables = build_defects(
        survey / "mask.tif", None, CLASSES, ReportConfig(min_area_m2=0), None, StructureAxes.of(None, 90.0)
    )
    defects = tables.defects.sort_values("centroid_y", ascending=False)
    assert len(defects) == 4
    meander_pieces = defects[defects["centroid_x"] < 400000 + 0.13]
    beside = defects[defects["centroid_x"] >= 400000 + 0.13]
    assert len(meander_pieces) == 3 and meander_pieces["crack_id"].nunique() == 1
    assert (meander_pieces["crack_type"] == "transverse").all()
    assert len(beside) == 1 and beside["crack_id"].iloc[0] not in set(meander_pieces["crack_id"])
    unlinked = build_defects(survey / "mask.tif", None, CLASSES, ReportConfig(min_area_m2=0, link_gap_m=0))
    assert sorted(unlinked.defects["crack_id"]) == sorted(unlinked.defects["defect_id"])
