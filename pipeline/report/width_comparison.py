"""How two flights measure the same cracks' widths: the pairs of widths a change report compares, the
flights' own difference (their optics: focus, light, GSD) and the noise of one piece's difference.

A crack widened only beyond both (``pipeline.report.change_matching``): two flights of unchanged
ground read widths differently, and without this most cracks of a reflown structure came out
widened (bench/change_stability.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import geopandas as gpd
import numpy as np

from pipeline.report.width import WIDTH_FROM_MASK

OWN_BANDS = "each survey's own"  # each width as its survey's report read it, over its own mask's band
SAME_BAND = "same band"  # the old survey's cracks read in both orthomosaics (pipeline.report.paired_widths)
MIN_BIAS_PAIRS = 20  # matched pieces needed to measure the flights' width difference and noise
WIDTH_BIAS_NOTE_MM = 0.1  # a larger difference between the flights is pointed out in the change report
WIDENING_SIGMAS = 3.0  # a crack widened when its widening exceeds this many standard errors too


@dataclass(frozen=True)
class WidthComparison:
    """How the two flights measure the same cracks' widths: the median difference over every matched
    centreline piece (the flights' optics: focus, light, GSD; a year of cracking moves few cracks)
    and the spread of a piece's difference about it (the widths' noise)."""

    pairs: int = 0  # matched centreline pieces with a width in both surveys
    bias_mm: float = 0.0  # new - old, median; 0 with fewer than MIN_BIAS_PAIRS pieces
    noise_mm: float = 0.0  # robust standard deviation (1.4826 MAD) of a piece's difference
    band: str = OWN_BANDS  # where both widths were read (SAME_BAND: the old cracks in both orthomosaics)
    scale: float = 1.0  # SAME_BAND: new / old, median; the new widths are divided by it before the rest

    def uncertainty_mm(self, pieces: int) -> float:
        """The standard error of the median of ``pieces`` differences."""
        return 1.2533 * self.noise_mm / math.sqrt(pieces) if pieces else math.inf

    def describe(self) -> str:
        """The change report's line on the flights' widths."""
        if self.pairs < MIN_BIAS_PAIRS:
            return f"not measured ({self.pairs} matched centreline pieces with widths; {MIN_BIAS_PAIRS} needed)"
        read = (
            f"the old survey's cracks read in both orthomosaics over the same band, the new widths divided by "
            f"{self.scale:.2f}, the flights' median ratio"
            if self.band == SAME_BAND
            else "each survey's own widths (an orthomosaic missing: each over its own mask's band)"
        )
        return (
            f"{self.bias_mm:+.2f} mm median over {self.pairs} matched centreline pieces, noise "
            f"{self.noise_mm:.2f} mm per piece ({read}): widening is judged beyond both"
        )

    def difference_note(self) -> str | None:
        """A note for the change report when the flights read the same cracks clearly differently."""
        if self.pairs < MIN_BIAS_PAIRS or abs(self.bias_mm) < WIDTH_BIAS_NOTE_MM:
            return None
        return (
            f"The new flight reads the same cracks {abs(self.bias_mm):.2f} mm "
            f"{'wider' if self.bias_mm > 0 else 'narrower'} (median over {self.pairs} matched "
            "centreline pieces): the flights' optics differ (focus, light, GSD), not the cracks. Widening "
            f"is judged beyond this difference and the widths' noise ({self.noise_mm:.2f} mm per piece); "
            "compare the two reports' widths with it in mind."
        )


def widths_from_images(lines: gpd.GeoDataFrame) -> bool:
    """Whether a report read its crack widths from the orthomosaic: only then are both flights read
    again over the same band (a report of the mask alone compares by the masks' widths)."""
    return "width_method" in lines and not (lines["width_method"] == WIDTH_FROM_MASK).any()


def _no_pairs() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"defect_id_new": [], "defect_id_old": [], "width_mm_new": [], "width_mm_old": []}, geometry=[]
    )


def _own_band_pairs(new_lines: gpd.GeoDataFrame, old_lines: gpd.GeoDataFrame, distance: float) -> gpd.GeoDataFrame:
    """Each matched new centreline piece with its nearest old piece (widths ``width_mm_new``/``_old``)."""
    followed = new_lines[new_lines["covered"] > 0.5]
    if not len(followed) or not len(old_lines):
        return _no_pairs()
    return gpd.sjoin_nearest(
        followed, old_lines[["defect_id", "width_mm", "geometry"]], max_distance=distance, lsuffix="new", rsuffix="old"
    )


def _same_band_pairs(paired: gpd.GeoDataFrame, new_lines: gpd.GeoDataFrame, distance: float) -> gpd.GeoDataFrame:
    """The old cracks' pieces read in both orthomosaics, each on the nearest followed new crack
    (``read_paired_widths``; the same columns as ``_own_band_pairs``)."""
    followed = new_lines.loc[new_lines["covered"] > 0.5, ["defect_id", "geometry"]]
    if not len(followed) or not len(paired):
        return _no_pairs()
    return gpd.sjoin_nearest(
        paired.rename(columns={"defect_id": "defect_id_old"}),
        followed.rename(columns={"defect_id": "defect_id_new"}),
        max_distance=distance,
    )


def _difference(pairs: gpd.GeoDataFrame, band: str) -> WidthComparison:
    differences = (pairs["width_mm_new"] - pairs["width_mm_old"]).to_numpy(float)
    differences = differences[np.isfinite(differences)]
    if len(differences) < MIN_BIAS_PAIRS:
        return WidthComparison(pairs=len(differences), band=band)
    bias = float(np.median(differences))
    return WidthComparison(len(differences), bias, float(1.4826 * np.median(np.abs(differences - bias))), band)


def width_pairs(
    new_lines: gpd.GeoDataFrame,
    old_lines: gpd.GeoDataFrame,
    paired: gpd.GeoDataFrame | None,
    distance: float,
) -> tuple[gpd.GeoDataFrame, WidthComparison]:
    """The pairs of widths (``defect_id_new``/``_old``, ``width_mm_new``/``_old``) along the new
    centreline pieces that follow an old crack (``covered`` > 0.5), and how the flights differ over them.

    With ``paired`` (the old cracks read in both orthomosaics, ``read_paired_widths``) the pairs are
    those, the new widths divided by the flights' median ratio; else each survey's own widths."""
    if paired is None or not len(paired):
        pairs = _own_band_pairs(new_lines, old_lines, distance)
        return pairs, _difference(pairs, OWN_BANDS)
    pairs, scale = _same_band_pairs(paired, new_lines, distance), 1.0
    # over the same band a width is darkness / core contrast, and each flight learns its own
    # contrast: the flights differ by a factor (blur moves a survey's contrast model), not a sum
    ratios = (pairs["width_mm_new"] / pairs["width_mm_old"]).to_numpy(float)
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    if len(ratios) >= MIN_BIAS_PAIRS:
        scale = float(np.exp(np.median(np.log(ratios))))
        pairs = pairs.assign(width_mm_new=pairs["width_mm_new"] / scale)
    return pairs, replace(_difference(pairs, SAME_BAND), scale=scale)
