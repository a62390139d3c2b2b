"""Element condition states of the surveyed ground from its cracks (AASHTO MBEI 2019, defect 1130).

An element-level inspection files quantities, not a list of cracks: how much of a deck's area is
in condition state 1 (good) to 3 (poor) for cracking. The state depends on two things a crack map
shows: crack width (insignificant / moderate / wide) and crack spacing (insignificant / moderate /
heavy pattern cracking). The surveyed ground is cut into square cells (``condition.cell_m``); each
cell takes the worse of the widest crack in it and the spacing of the cracks around it (ground
area / crack length over a ``spacing_window_m`` square: the spacing of parallel cracks of that
density). A width the pixels cannot rate (narrower than a pixel that is wider than the lowest
threshold, or unmeasured) gives a range of states, never a guessed one; so does ground too dark or
too clipped to show a crack (``pipeline.report.exposure``) or too blurred to show a thin one
(``pipeline.report.sharpness``). CS4 (a structural review is warranted)
and sealing are an inspector's call and are never assigned.

Memory is flat in raster size: the mask (and the orthomosaic's exposure) is read decimated (at
most ``READ_PX`` a side) for the surveyed area, the blur from at most ``MAX_WINDOWS`` small
full-resolution windows, and the cracks come from the centreline layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.enums import Resampling
from scipy.ndimage import uniform_filter
from shapely.geometry.base import BaseGeometry

from pipeline.class_ids import NO_CLASS
from pipeline.config import ConditionConfig, SeverityConfig
from pipeline.raster.ground import ground_pixel_size
from pipeline.report.defects import MIN_RESOLVED_PX, below_resolution
from pipeline.report.exposure import exposure_samples
from pipeline.report.footprint import mask_footprint
from pipeline.report.sharpness import blur_per_cell

READ_PX = 2048  # the mask's valid pixels (and the image's exposure) are read at most this many pixels a side
MIN_CELL_CRACK = 0.05  # a cell holding less crack than this share of its side (the tip of a crack just
# across a cell line) keeps its state; the tip still counts in its neighbours' spacing
SQFT_PER_M2 = 1 / 0.3048**2
GOOD, FAIR, POOR = 1, 2, 3
STATE_MEANINGS = {
    "CS1": "good: no cracks, or insignificant ones (narrow and widely spaced)",
    "CS1-CS2": "good or fair: a crack narrower than a pixel, which this GSD cannot rate",
    "CS2": "fair: moderate-width cracks or moderate spacing (unsealed)",
    "CS1-CS3": "good to poor: a crack whose width the image or this GSD cannot rate, or ground too dark,"
    " overexposed or blurred to show cracks",
    "CS2-CS3": "fair or poor: a crack whose width the image or this GSD cannot rate, or ground too dark,"
    " overexposed or blurred to show all its cracks",
    "CS3": "poor: wide cracks or heavy pattern (map) cracking",
}
EXPOSURE_OK, TOO_DARK, OVEREXPOSED, NOT_CHECKED = "ok", "too dark", "overexposed", "not checked"
SHARP, TOO_BLURRED, TOO_PLAIN = "ok", "too blurred", "too plain to tell"  # and NOT_CHECKED (no image)
CELL_COLUMNS = [
    "row",
    "col",
    "surveyed_m2",
    "crack_length_m",
    "spacing_m",
    "max_width_mm",
    "condition_state",
    "cs_min",
    "cs_max",
    "exposure",
    "luminance",
    "clipped_share",
    "sharpness",
    "blur_px",
    "blur_mm",
]
STATE_COLUMNS = ["condition_state", "meaning", "area_m2", "area_sqft", "share", "cells"]


def badly_exposed(cells: pd.DataFrame) -> pd.Series:
    """Per condition cell: too dark or overexposed to show a crack."""
    return cells["exposure"].isin((TOO_DARK, OVEREXPOSED))


def cannot_show_cracks(cells: pd.DataFrame) -> pd.Series:
    """Per condition cell: its orthomosaic cannot show a crack there (too dark, overexposed or too
    blurred; a report from before the blur check has exposure only)."""
    unrated = badly_exposed(cells)
    return unrated | (cells["sharpness"] == TOO_BLURRED) if "sharpness" in cells else unrated


@dataclass(frozen=True)
class ConditionStates:
    """The condition map (one polygon per cell with surveyed ground) and the element quantities."""

    cells: gpd.GeoDataFrame  # CELL_COLUMNS + geometry, in the mask's CRS
    states: pd.DataFrame  # STATE_COLUMNS, one row per state (CS1, CS2, CS3 always; ranges when present)
    by_element: pd.DataFrame | None = None  # the same per element of the structure (pipeline.report.elements)

    @property
    def area_by_exposure(self) -> dict[str, float]:
        """Surveyed square metres per exposure verdict (ok, too dark, overexposed, not checked)."""
        areas = self.cells.groupby("exposure")["surveyed_m2"].sum()
        return {str(verdict): float(area) for verdict, area in areas.items()}

    @property
    def unrated_m2(self) -> dict[str, float]:
        """Square metres too dark, overexposed or too blurred to show a crack, by verdict (only those
        with ground; a cell both dark and blurred counts as dark)."""
        blurred = cannot_show_cracks(self.cells) & ~badly_exposed(self.cells)
        areas = self.area_by_exposure | {TOO_BLURRED: float(self.cells.loc[blurred, "surveyed_m2"].sum())}
        return {v: areas[v] for v in (TOO_DARK, OVEREXPOSED, TOO_BLURRED) if areas.get(v, 0.0) > 0}

    @property
    def too_plain_m2(self) -> float:
        """Square metres, lit and exposed, whose blur could not be read (too little texture)."""
        lit = ~badly_exposed(self.cells)
        return float(self.cells.loc[lit & (self.cells["sharpness"] == TOO_PLAIN), "surveyed_m2"].sum())

    def median_blur(self, unit: Literal["px", "mm"] = "px") -> float:
        """The orthomosaic's blur over the surveyed ground in ``unit`` (px or mm): the area-weighted
        median over the cells it was read in (NaN: none)."""
        read = self.cells[self.cells[f"blur_{unit}"].notna()]
        if not len(read):
            return math.nan
        values = read[f"blur_{unit}"].to_numpy()
        order = np.argsort(values)
        weights = np.cumsum(read["surveyed_m2"].to_numpy()[order])
        return float(values[order][np.searchsorted(weights, weights[-1] / 2)])

    @property
    def area_by_state(self) -> dict[str, float]:
        """Square metres per condition state (the report's summary, MLflow's metrics)."""
        return dict(zip(self.states["condition_state"].astype(str), self.states["area_m2"].astype(float), strict=True))


@dataclass(frozen=True)
class _Grid:
    """Square cells of ``cell_m`` ground metres laid from the raster's top-left corner."""

    x0: float
    y0: float
    step_x: float  # cell side in CRS units along x
    step_y: float  # and along y (differ where a CRS's units are not square on the ground)
    rows: int
    cols: int

    def index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, col, inside) of points given in CRS coordinates."""
        col = np.floor((x - self.x0) / self.step_x).astype(np.int64)
        row = np.floor((self.y0 - y) / self.step_y).astype(np.int64)
        inside = (row >= 0) & (row < self.rows) & (col >= 0) & (col < self.cols)
        return np.clip(row, 0, self.rows - 1), np.clip(col, 0, self.cols - 1), inside


def _width_states(widths_mm: np.ndarray, gsd_mm: float, severity: SeverityConfig) -> tuple[np.ndarray, np.ndarray]:
    """(best, worst) state each crack piece can be in by its measured width alone: one state where
    the width is rated, a range where it is narrower than a pixel that is wider than the lowest
    threshold (at most a pixel wide) or unmeasured (NaN: no contrast in the image)."""
    low, high = severity.crack_width_mm

    def state(width: np.ndarray) -> np.ndarray:
        return np.where(width < low, GOOD, np.where(width > high, POOR, FAIR))

    best, worst = state(widths_mm), state(widths_mm)
    below = below_resolution(widths_mm, gsd_mm, low)
    best[below], worst[below] = GOOD, state(np.asarray(gsd_mm * MIN_RESOLVED_PX))
    unmeasured = np.isnan(widths_mm)
    best[unmeasured], worst[unmeasured] = GOOD, POOR
    return best, worst


@dataclass(frozen=True)
class _Samples:
    """A decimated read of the raster (at most READ_PX a side) mapped onto the grid: the grid is
    axis-aligned, so each read column falls in one cell column and each row in one cell row, and
    a per-cell sum is two small matrix products (no per-pixel index arrays)."""

    shape: tuple[int, int]  # (rows, cols) of the read
    in_row: np.ndarray  # (grid rows, read rows): 1 where a read row lies in a cell row
    in_col: np.ndarray  # (read cols, grid cols)
    sample_m2: float  # ground per sample

    @classmethod
    def of(cls, mask: rasterio.DatasetReader, grid: _Grid, pixel_m2: float) -> _Samples:
        step = max(1, math.ceil(max(mask.width, mask.height) / READ_PX))
        shape = (max(1, math.ceil(mask.height / step)), max(1, math.ceil(mask.width / step)))
        transform = mask.transform @ mask.transform.scale(mask.width / shape[1], mask.height / shape[0])
        x = transform.c + (np.arange(shape[1]) + 0.5) * transform.a
        y = transform.f + (np.arange(shape[0]) + 0.5) * transform.e
        row, _, _ = grid.index(np.full(shape[0], grid.x0), y)
        _, col, _ = grid.index(x, np.full(shape[1], grid.y0))
        in_col = np.zeros((shape[1], grid.cols), np.float32)
        in_col[np.arange(shape[1]), col] = 1
        in_row = np.zeros((grid.rows, shape[0]), np.float32)
        in_row[row, np.arange(shape[0])] = 1
        sample_m2 = pixel_m2 * (mask.width / shape[1]) * (mask.height / shape[0])
        return cls(shape, in_row, in_col, sample_m2)

    def per_cell(self, values: np.ndarray) -> np.ndarray:
        """The sum of a (read rows, read cols) array over each cell (float64)."""
        return (self.in_row @ (values.astype(np.float32) @ self.in_col)).astype(np.float64)


def _exposure(
    image: Path | None, samples: _Samples, valid: np.ndarray, cfg: ConditionConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: mean luminance, share of clipped pixels (NaN without an image) and the exposure
    verdict (EXPOSURE_OK, TOO_DARK, OVEREXPOSED or NOT_CHECKED) of its surveyed pixels."""
    shape = samples.in_row.shape[0], samples.in_col.shape[1]
    if image is None:
        return np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, NOT_CHECKED, object)
    seen = exposure_samples(image, samples.shape)
    usable = valid & seen.valid
    count = samples.per_cell(usable)
    with np.errstate(divide="ignore", invalid="ignore"):
        luminance = samples.per_cell(np.where(usable, seen.luminance, 0)) / count
        clipped = samples.per_cell(usable & seen.clipped) / count
    verdict = np.full(shape, EXPOSURE_OK, object)
    verdict[clipped > cfg.max_clipped_share] = OVEREXPOSED
    verdict[luminance < cfg.min_luminance] = TOO_DARK
    verdict[count == 0] = NOT_CHECKED
    return luminance, clipped, verdict


def _sharpness(
    image: Path | None,
    centres_px: tuple[np.ndarray, np.ndarray],
    cell_px: float,
    surveyed: np.ndarray,
    cfg: ConditionConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: the orthomosaic's blur (px, NaN where unread) and the verdict (SHARP, TOO_BLURRED,
    TOO_PLAIN or NOT_CHECKED). ``centres_px``: the image rows and columns of the cells' centres;
    ``cell_px``: a cell's side in pixels."""
    if image is None:
        return np.full(surveyed.shape, np.nan), np.full(surveyed.shape, NOT_CHECKED, object)
    blur = blur_per_cell(image, *centres_px, surveyed > 0, cell_px)
    shape = surveyed.shape
    verdict = np.full(shape, SHARP, object)
    verdict[np.isnan(blur)] = TOO_PLAIN
    verdict[blur > cfg.max_blur_px] = TOO_BLURRED
    return blur, verdict


def _split_at_cell_lines(start: np.ndarray, end: np.ndarray, grid: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """Each segment (shorter than a cell) cut where it crosses a cell line: its three parts' midpoints
    (3 x n points; a part is empty where there is no crossing) and their shares of the segment."""
    cuts = []
    for axis, origin, step in ((0, grid.x0, grid.step_x), (1, grid.y0, -grid.step_y)):
        first, last = np.floor((start[:, axis] - origin) / step), np.floor((end[:, axis] - origin) / step)
        line = origin + np.maximum(first, last) * step  # the cell line between them, where they differ
        delta = end[:, axis] - start[:, axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            cuts.append(np.where(first != last, (line - start[:, axis]) / delta, 1.0))
    a, b = np.minimum(*cuts), np.maximum(*cuts)
    bounds = np.stack([np.zeros_like(a), a, b, np.ones_like(a)])
    share = np.diff(bounds, axis=0)
    middle = (bounds[:-1] + bounds[1:]) / 2
    points = start[None] + middle[..., None] * (end - start)[None]
    return points, share


def _crack_cells(
    centerlines: gpd.GeoDataFrame, grid: _Grid, gsd_mm: float, severity: SeverityConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: crack length (m), widest measured width (mm, NaN if none), best and worst width state.

    Each centreline piece is cut into segments shorter than a cell, and each segment where it crosses
    a cell line; every part's share of the piece's ground length goes to the cell it lies in.
    """
    shape = (grid.rows, grid.cols)
    length, widest = np.zeros(shape), np.full(shape, np.nan)
    best, worst = np.zeros(shape, np.int64), np.zeros(shape, np.int64)  # 0: no crack
    lines = centerlines[~centerlines.geometry.is_empty & (centerlines["length_m"] > 0)]
    if not len(lines):
        return length, widest, best, worst
    pieces = shapely.segmentize(np.asarray(lines.geometry.values), min(grid.step_x, grid.step_y) / 4)
    coords, owner = shapely.get_coordinates(pieces, return_index=True)
    same = owner[1:] == owner[:-1]  # consecutive vertices of one piece: a segment
    start, end, piece = coords[:-1][same], coords[1:][same], owner[:-1][same]
    seg_units = np.hypot(*(end - start).T)
    piece_units = np.bincount(piece, weights=seg_units, minlength=len(lines))
    seg_m = lines["length_m"].to_numpy()[piece] * seg_units / np.maximum(piece_units[piece], 1e-300)
    points, share = _split_at_cell_lines(start, end, grid)
    row, col, inside = grid.index(points[..., 0].ravel(), points[..., 1].ravel())
    part_m = (share * seg_m[None]).ravel()
    piece = np.tile(piece, 3)
    keep = inside & (part_m > 0)
    row, col, piece, part_m = row[keep], col[keep], piece[keep], part_m[keep]
    np.add.at(length, (row, col), part_m)
    widths = lines["width_mm"].to_numpy(dtype=float)
    piece_best, piece_worst = _width_states(widths, gsd_mm, severity)
    np.maximum.at(best, (row, col), piece_best[piece])
    np.maximum.at(worst, (row, col), piece_worst[piece])
    measured = ~np.isnan(widths[piece])
    np.fmax.at(widest, (row[measured], col[measured]), widths[piece][measured])
    return length, widest, best, worst


def _spacing_states(
    length: np.ndarray, surveyed: np.ndarray, grid: _Grid, cfg: ConditionConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(crack spacing m, state by spacing) of each cell with crack: ground / crack length over the
    window; a cell without (NaN spacing) is GOOD."""
    cells = max(1, round(cfg.spacing_window_m / cfg.cell_m))
    cells += 1 - cells % 2  # odd: centred on the cell
    window_length = uniform_filter(length, cells, mode="constant") * cells**2
    window_ground = uniform_filter(surveyed, cells, mode="constant") * cells**2
    with np.errstate(divide="ignore", invalid="ignore"):
        spacing = np.where(length > 0, window_ground / window_length, np.nan)
    heavy, insignificant = cfg.crack_spacing_m
    return spacing, np.where(spacing < heavy, POOR, np.where(spacing <= insignificant, FAIR, GOOD))


def _label(best: int, worst: int) -> str:
    return f"CS{best}" if best == worst else f"CS{best}-CS{worst}"


def assess_condition(
    mask_path: Path,
    centerlines: gpd.GeoDataFrame,
    cfg: ConditionConfig,
    severity: SeverityConfig,
    image: Path | None = None,
) -> ConditionStates:
    """The condition state of every cell of surveyed ground, and the area in each state. With the
    orthomosaic (``image``, on the mask's grid), a cell too dark or too clipped to show a crack
    can be in a worse state than its cracks say: its state is a range up to CS3."""
    with rasterio.open(mask_path, driver="GTiff") as mask:
        centre = ground_pixel_size(mask.crs, mask.transform, mask.width / 2, mask.height / 2)
        units_x, units_y = abs(mask.transform.a), abs(mask.transform.e)
        step_x, step_y = cfg.cell_m / centre.x_m * units_x, cfg.cell_m / centre.y_m * units_y
        grid = _Grid(
            mask.transform.c,
            mask.transform.f,
            step_x,
            step_y,
            max(1, math.ceil(mask.height * units_y / step_y - 1e-9)),
            max(1, math.ceil(mask.width * units_x / step_x - 1e-9)),
        )
        samples = _Samples.of(mask, grid, centre.area_m2)
        valid = mask.read(1, out_shape=samples.shape, resampling=Resampling.nearest) != NO_CLASS
        bounds, crs = mask.bounds, mask.crs
        centres_px = (
            np.clip((np.arange(grid.rows) + 0.5) * step_y / units_y, 0, mask.height - 1),
            np.clip((np.arange(grid.cols) + 0.5) * step_x / units_x, 0, mask.width - 1),
        )
    surveyed = np.rint(samples.per_cell(valid)) * samples.sample_m2
    luminance, clipped, exposure = _exposure(image, samples, valid, cfg)
    blur, sharpness = _sharpness(image, centres_px, min(step_x / units_x, step_y / units_y), surveyed, cfg)
    gsd_mm = centre.mean_m * 1000
    length, widest, width_best, width_worst = _crack_cells(centerlines, grid, gsd_mm, severity)
    spacing, spacing_state = _spacing_states(length, surveyed, grid, cfg)
    cracked = length >= MIN_CELL_CRACK * cfg.cell_m
    best = np.where(cracked, np.maximum(spacing_state, width_best), GOOD)
    worst = np.where(cracked, np.maximum(spacing_state, width_worst), GOOD)
    worst[(exposure == TOO_DARK) | (exposure == OVEREXPOSED) | (sharpness == TOO_BLURRED)] = POOR  # may not show
    rows, cols = np.nonzero(surveyed > 0)
    labels = [_label(b, w) for b, w in zip(best[rows, cols], worst[rows, cols], strict=True)]
    boxes = shapely.box(
        np.maximum(grid.x0 + cols * step_x, bounds.left),
        np.maximum(grid.y0 - (rows + 1) * step_y, bounds.bottom),
        np.minimum(grid.x0 + (cols + 1) * step_x, bounds.right),
        np.minimum(grid.y0 - rows * step_y, bounds.top),
    )
    # each cell's outline is its surveyed part: a map never paints ground the flight did not see
    footprint = mask_footprint(mask_path, crs)
    shapely.prepare(footprint)
    edge = ~shapely.contains_properly(footprint, boxes)  # only cells on the footprint's edge are cut
    outlines = shapely.intersection(boxes[edge], footprint)
    traced = ~shapely.is_empty(outlines) & np.isin(shapely.get_type_id(outlines), (3, 6))  # (multi)polygons
    boxes[np.flatnonzero(edge)[traced]] = outlines[traced]  # a sliver the traced footprint missed keeps its box
    cells = gpd.GeoDataFrame(
        {
            "row": rows.astype(np.int64),
            "col": cols.astype(np.int64),
            "surveyed_m2": surveyed[rows, cols],
            "crack_length_m": length[rows, cols],
            "spacing_m": spacing[rows, cols],
            "max_width_mm": widest[rows, cols],
            "condition_state": labels,
            "cs_min": best[rows, cols].astype(np.int64),
            "cs_max": worst[rows, cols].astype(np.int64),
            "exposure": exposure[rows, cols].astype(str),
            "luminance": luminance[rows, cols],
            "clipped_share": clipped[rows, cols],
            "sharpness": sharpness[rows, cols].astype(str),
            "blur_px": blur[rows, cols],
            "blur_mm": blur[rows, cols] * gsd_mm,
        },
        geometry=boxes,
        crs=crs,
    )
    return ConditionStates(cells, quantities(cells))


def quantities(cells: gpd.GeoDataFrame, within: BaseGeometry | None = None) -> pd.DataFrame:
    """Area per condition state, CS1-CS3 always, ranges only where some cell has one; ``within`` (in
    the cells' CRS: the ground two surveys both imaged) keeps each cell's share inside it."""
    ground = cells["surveyed_m2"].to_numpy(dtype=float)
    if within is not None:
        cell_area = cells.geometry.area.to_numpy()
        inside = cells.geometry.intersection(within).area.to_numpy()
        ground = ground * np.divide(inside, cell_area, out=np.zeros_like(ground), where=cell_area > 0)
    total = float(ground.sum())
    rows = []
    for state, meaning in STATE_MEANINGS.items():
        chosen = (cells["condition_state"] == state).to_numpy() & (ground > 0)
        if not chosen.any() and "-" in state:
            continue
        area = float(ground[chosen].sum())
        rows.append(
            {
                "condition_state": state,
                "meaning": meaning,
                "area_m2": area,
                "area_sqft": area * SQFT_PER_M2,
                "share": area / total if total else 0.0,
                "cells": int(chosen.sum()),
            }
        )
    return pd.DataFrame(rows, columns=STATE_COLUMNS)


def condition_change(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Two epochs' quantities (``quantities`` on the same ground) side by side: the element's change."""
    merged = pd.merge(
        old[["condition_state", "area_m2"]],
        new[["condition_state", "area_m2"]],
        on="condition_state",
        how="outer",
        suffixes=("_old", "_new"),
    ).fillna({"area_m2_old": 0.0, "area_m2_new": 0.0})
    merged["change_m2"] = merged["area_m2_new"] - merged["area_m2_old"]
    order = {state: i for i, state in enumerate(STATE_MEANINGS)}
    merged = merged.sort_values("condition_state", key=lambda states: states.map(order)).reset_index(drop=True)
    return merged.rename(columns={"area_m2_old": "old_m2", "area_m2_new": "new_m2"})
