"""A structure's elements (deck spans, pier caps, abutments: named polygons drawn once per structure)
and the condition-state quantities of each, as an element-level inspection files them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.config import ElementsConfig
from pipeline.errors import MsafError
from pipeline.job import axis_degrees
from pipeline.report.condition import STATE_COLUMNS, quantities
from pipeline.vectors import POLYGONS, read_vectors

ELEMENT_COLUMNS = ["element", "surveyed_m2", *STATE_COLUMNS]
AXIS_FIELD = "axis_deg"  # optional: the element's axis, degrees clockwise from grid north (a deck: the traffic)


@dataclass(frozen=True)
class Elements:
    """Named element polygons in the mask's CRS; features sharing a name are one element. ``axes``:
    each element's ``axis_deg`` where the file gives one (degrees from grid north, in [0, 180))."""

    names: list[str]
    geometries: list[BaseGeometry]
    axes: list[float | None]


def read_elements(source: ElementsConfig, crs: Any) -> Elements:
    """Element polygons from any vector file in any CRS, named by ``source.field``; one line for each
    expected mistake (no file, no polygons, no such field, an unnamed polygon)."""
    path, name_field = source.path, source.field
    frame = read_vectors(path, source.layer, crs, "elements")
    if not len(frame):
        raise MsafError(f"{path}: no features; draw the structure's elements as polygons with a {name_field!r} field")
    kinds = set(frame.geometry.geom_type)
    if not kinds <= set(POLYGONS):
        raise MsafError(f"{path}: elements must be polygons, found {', '.join(sorted(kinds - set(POLYGONS)))}")
    if name_field not in frame.columns:
        fields = ", ".join(c for c in frame.columns if c != frame.geometry.name) or "none"
        raise MsafError(f"{path}: no field {name_field!r} names the elements (fields: {fields}); pass --element-field")
    names = frame[name_field].astype(str).str.strip()
    if unnamed := int((frame[name_field].isna() | (names == "")).sum()):
        raise MsafError(f"{path}: {unnamed} polygon(s) have no {name_field!r}; name every element")
    grouped = frame.assign(_name=names).groupby("_name", sort=False)
    return Elements(
        names=list(grouped.groups),
        geometries=[shapely.union_all(group.geometry.make_valid().values) for _, group in grouped],
        axes=[_axis(group, path) if AXIS_FIELD in frame.columns else None for _, group in grouped],
    )


def _axis(group: gpd.GeoDataFrame, path: Any) -> float | None:
    """One element's ``axis_deg`` (its first filled value), folded into [0, 180); one line if not a number."""
    values = group[AXIS_FIELD].dropna()
    values = values[values.astype(str).str.strip() != ""]
    if not len(values):
        return None
    degrees = axis_degrees(values.iloc[0])
    if degrees is None:
        raise MsafError(
            f"{path}: {AXIS_FIELD} {values.iloc[0]!r} of element {group['_name'].iloc[0]!r} is not a number; "
            "give the axis in degrees clockwise from grid north"
        )
    return degrees


def quantities_by_element(cells: gpd.GeoDataFrame, elements: Elements) -> pd.DataFrame:
    """Per element and condition state: the surveyed ground of the cells inside it (each cell pro rata)."""
    frames = []
    for name, geometry in zip(elements.names, elements.geometries, strict=True):
        table = quantities(cells, geometry)
        frames.append(table.assign(element=name, surveyed_m2=float(table["area_m2"].sum())))
    return pd.concat(frames, ignore_index=True)[ELEMENT_COLUMNS]
