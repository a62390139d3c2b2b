"""Matplotlib figures for the HTML report, returned as PNG bytes (embedded, so the page is self-contained)."""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from matplotlib import patheffects
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from rasterio.enums import Resampling
from shapely.geometry.base import BaseGeometry

from pipeline.errors import MsafError
from pipeline.raster.source import file_bit_depth_scale, on_survey_scale, rgb_bands, to_uint8
from pipeline.raster.trust import driver_for
from pipeline.styles import CENTERLINE_COLOUR, ELEMENT_COLOUR

SURVEYED_COLOUR = "#00e5ff"  # cyan: apart from every severity and class colour, seen on grey and green
SURVEYED_LABEL = "surveyed area"


class _DrawnOnSave(FigureCanvasAgg):
    """A canvas that draws only when the figure is saved: geopandas asks for a redraw after every
    layer it plots (``draw_idle``), which rendered each report map once per layer (half of a small
    survey's report time went there)."""

    def draw_idle(self, *args: object, **kwargs: object) -> None:
        pass


def _figure(*grid: int, figsize: tuple[float, float]) -> tuple[Figure, Any]:
    """A figure of its own (not pyplot's global state) on a canvas that draws when saved."""
    fig = Figure(figsize=figsize)
    _DrawnOnSave(fig)
    return fig, fig.subplots(*grid)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # zlib level 3, not PIL's 6: a map (mostly orthomosaic) comes out 4 % larger and a third faster
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", pil_kwargs={"compress_level": 3})
    return buffer.getvalue()


def _thumbnail(path: Path | None, bounds: tuple[float, float, float, float], max_side: int) -> np.ndarray | None:
    """A decimated RGBA read of the orthomosaic over exactly ``bounds`` (its CRS; overviews are used
    when present; ground beyond the raster transparent): the map draws it with those bounds as its
    extent, so a map of part of the raster (a change report's changes) shows that part, not the
    whole raster squeezed into it. Read once for the maps of one page (read-only): a report draws
    the same ground three times, and without overviews each read decimates the whole orthomosaic."""
    if path is None or not Path(path).is_file():
        return None
    stat = Path(path).stat()
    return _read_thumbnail(str(Path(path).absolute()), stat.st_mtime_ns, stat.st_size, bounds, max_side)


@functools.lru_cache(maxsize=4)
def _read_thumbnail(
    path: str, _mtime_ns: int, _size: int, bounds: tuple[float, float, float, float], max_side: int
) -> np.ndarray | None:
    """``_thumbnail`` of the file as it is (its modification time and size in the key)."""
    try:
        with rasterio.open(path, driver=driver_for(str(path), "vrt")) as ds:
            window = rasterio.windows.from_bounds(*bounds, transform=ds.transform)
            scale = max(window.width, window.height) / max_side
            shape = (max(1, int(window.height / max(scale, 1))), max(1, int(window.width / max(scale, 1))))
            rgba = np.zeros((*shape, 4), np.uint8)
            # the part of the window on the raster, read on its own (a boundless read bypasses overviews)
            col0, row0 = max(0.0, window.col_off), max(0.0, window.row_off)
            col1 = min(float(ds.width), window.col_off + window.width)
            row1 = min(float(ds.height), window.row_off + window.height)
            out_cols = [round((c - window.col_off) / window.width * shape[1]) for c in (col0, col1)]
            out_rows = [round((r - window.row_off) / window.height * shape[0]) for r in (row0, row1)]
            if out_cols[1] <= out_cols[0] or out_rows[1] <= out_rows[0]:
                rgba.flags.writeable = False
                return rgba
            inside = rasterio.windows.Window(col0, row0, col1 - col0, row1 - row0)
            part = (out_rows[1] - out_rows[0], out_cols[1] - out_cols[0])
            rgb = ds.read(rgb_bands(ds), window=inside, out_shape=(3, *part), resampling=Resampling.average)
            valid = ds.dataset_mask(window=inside, out_shape=part) > 0
            if rgb.dtype != np.uint8:
                rgb = to_uint8(rgb, file_bit_depth_scale(ds)) if valid.any() else np.zeros(rgb.shape, np.uint8)
    except (rasterio.errors.RasterioError, MsafError):
        return None
    rgba[out_rows[0] : out_rows[1], out_cols[0] : out_cols[1]] = np.dstack(
        [rgb.transpose(1, 2, 0), np.where(valid, 255, 0).astype(np.uint8)]
    )
    rgba.flags.writeable = False  # shared by the maps that draw it
    return rgba


def _nice_length(span_m: float) -> float:
    target = span_m / 5
    power = 10 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


def _scale_bar(ax: Axes, bounds: tuple[float, float, float, float], metres_per_unit: float) -> None:
    minx, miny, maxx, maxy = bounds
    length_m = _nice_length((maxx - minx) * metres_per_unit)
    length_units = length_m / metres_per_unit
    x0, y0 = minx + 0.04 * (maxx - minx), miny + 0.05 * (maxy - miny)
    ax.plot([x0, x0 + length_units], [y0, y0], color="black", linewidth=4, solid_capstyle="butt")
    ax.plot([x0, x0 + length_units], [y0, y0], color="white", linewidth=2, solid_capstyle="butt")
    label = f"{length_m:g} m" if length_m >= 1 else f"{length_m * 100:g} cm"
    ax.text(
        x0 + length_units / 2,
        y0 + 0.02 * (maxy - miny),
        label,
        ha="center",
        va="bottom",
        fontsize=9,
        bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1},
    )
    ax.annotate(
        "N",
        xy=(maxx - 0.05 * (maxx - minx), maxy - 0.05 * (maxy - miny)),
        xytext=(maxx - 0.05 * (maxx - minx), maxy - 0.15 * (maxy - miny)),
        ha="center",
        fontsize=11,
        arrowprops={"arrowstyle": "-|>", "color": "black"},
    )


@dataclass(frozen=True)
class MapLabel:
    """Text to write on a map at a geometry (a defect's id, an element's name)."""

    text: str
    geometry: BaseGeometry


def _label(ax: Axes, text: str, point: BaseGeometry, size: int) -> None:
    """Text on a map, legible over any picture (a white halo)."""
    ax.annotate(
        text,
        xy=(point.x, point.y),
        xytext=(3, 3),
        textcoords="offset points",
        fontsize=size,
        color="black",
        path_effects=[patheffects.withStroke(linewidth=2.5, foreground="white")],
    )


def overview_map(
    ortho: Path | None,
    bounds: tuple[float, float, float, float],
    frame: gpd.GeoDataFrame,
    colour_column: str,
    colours: dict[str, str],
    metres_per_unit: float,
    title: str,
    surveyed: BaseGeometry | None = None,
    lines: gpd.GeoSeries | None = None,
    labels: list[MapLabel] | None = None,
    outlines: list[MapLabel] | None = None,
) -> bytes:
    """Orthomosaic thumbnail with defect outlines coloured by ``colour_column``, legend, scale bar, north
    arrow; ``surveyed`` (the area of interest a survey kept to) outlined dashed, so ground outside it
    does not read as ground without defects; ``lines`` (crack centrelines) drawn thin on top;
    ``labels`` (defect ids the tables name) at their defects; ``outlines`` (the structure's elements)
    drawn and named."""
    minx, miny, maxx, maxy = bounds
    aspect = (maxy - miny) / max(maxx - minx, 1e-12)
    fig, ax = _figure(figsize=(9, max(3.0, min(12.0, 9 * aspect))))
    thumb = _thumbnail(ortho, bounds, 1400)
    if thumb is not None:
        ax.imshow(thumb, extent=(minx, maxx, miny, maxy), interpolation="bilinear")
    else:
        ax.set_facecolor("#dddddd")
    for value, colour in colours.items():
        subset = frame[frame[colour_column] == value]
        if len(subset):
            subset.boundary.plot(ax=ax, color=colour, linewidth=1.2)
            subset.plot(ax=ax, color=colour, alpha=0.35)
    handles: list[Artist] = [Patch(color=c, label=v) for v, c in colours.items()]
    if lines is not None and len(lines):
        lines.plot(ax=ax, color=CENTERLINE_COLOUR, linewidth=0.6)
        handles.append(Line2D([], [], color=CENTERLINE_COLOUR, label="crack centrelines"))
    if surveyed is not None and not surveyed.is_empty:
        gpd.GeoSeries([surveyed]).boundary.plot(ax=ax, color=SURVEYED_COLOUR, linewidth=1.5, linestyle="--")
        handles.append(Line2D([], [], color=SURVEYED_COLOUR, linestyle="--", label=SURVEYED_LABEL))
    for outline in outlines or []:
        gpd.GeoSeries([outline.geometry]).boundary.plot(ax=ax, color=ELEMENT_COLOUR, linewidth=1.0, linestyle=":")
        _label(ax, outline.text, outline.geometry.representative_point(), 9)
    if outlines:
        handles.append(Line2D([], [], color=ELEMENT_COLOUR, linestyle=":", label="elements"))
    for label in labels or []:
        _label(ax, label.text, label.geometry.representative_point(), 7)
    ax.set_xlim(minx, maxx)
    ax.set_ylim(miny, maxy)
    ax.set_title(title)
    ax.tick_params(labelsize=7)
    ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.8)
    _scale_bar(ax, bounds, metres_per_unit)
    return _png(fig)


def chip(ortho: Path | None, geometry, margin_units: float, title: str, colour: str) -> bytes | None:
    """A small picture of one defect with its outline."""
    minx, miny, maxx, maxy = geometry.bounds
    minx, miny, maxx, maxy = minx - margin_units, miny - margin_units, maxx + margin_units, maxy + margin_units
    if ortho is None or not Path(ortho).is_file():
        return None
    with rasterio.open(ortho, driver=driver_for(str(ortho), "vrt")) as ds:
        window = rasterio.windows.from_bounds(minx, miny, maxx, maxy, ds.transform)
        scale = max(window.width, window.height) / 320
        shape = (max(1, int(window.height / max(scale, 1))), max(1, int(window.width / max(scale, 1))))
        rgb = ds.read(
            (1, 2, 3), window=window, out_shape=(3, *shape), boundless=True, fill_value=0, resampling=Resampling.average
        )
        rgb = on_survey_scale(ds, rgb)
    fig, ax = _figure(figsize=(3, 3))
    ax.imshow(rgb.transpose(1, 2, 0), extent=(minx, maxx, miny, maxy))
    gpd.GeoSeries([geometry]).boundary.plot(ax=ax, color=colour, linewidth=1.5)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return _png(fig)


def histogram(values: np.ndarray, xlabel: str, title: str) -> bytes:
    """A histogram as PNG bytes (report figures)."""
    fig, ax = _figure(figsize=(5, 3))
    ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="#2c7bb6", edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("defects")
    ax.set_title(title)
    return _png(fig)


def bars(labels: list[str], values: list[float], ylabel: str, title: str, colours: list[str]) -> bytes:
    """A bar chart as PNG bytes (report figures)."""
    fig, ax = _figure(figsize=(5, 3))
    ax.bar(labels, values, color=colours)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _png(fig)


def timelines(epochs: pd.DataFrame, surveys: list[str]) -> bytes:
    """Each crack's length and widest width survey by survey (``epochs``: crack, survey (1-based),
    length_m, max_width_mm), one line per crack, the surveys named on the x axis."""
    fig, axes = _figure(1, 2, figsize=(10, 3.6))
    for crack, rows in epochs.groupby("crack"):
        for ax, column in zip(axes, ("length_m", "max_width_mm"), strict=True):
            ax.plot(rows["survey"], rows[column], marker="o", label=f"crack {crack}")
    for ax, label in zip(axes, ("length (m)", "widest width (mm)"), strict=True):
        ax.set_xticks(range(1, len(surveys) + 1), surveys, rotation=20, fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    return _png(fig)
