"""Defect maps as CAD drawings (``defects.dxf``, and ``changes.dxf`` of a comparison): bridge
engineers mark cracks up on the structure's drawings in AutoCAD, BricsCAD or LibreCAD, not in a GIS.

A drawing is in the survey's CRS and its units (so it lands on an orthomosaic or a site plan
inserted at their real-world coordinates), with one layer per class and severity (or per change
status) in the GIS styles' colours, so a drafter can freeze or re-colour what a drawing needs by
layer: defect outlines, crack centrelines, a label per defect (its id and width, or area), the
joints, and the condition cells (frozen until thawed). Each outline and centreline carries its key
(``defect_id``, ``change_id``) and ratings as extended data of the application ``MSAF``, the way
back to the GeoPackage's attributes. A geographic CRS has no drawing: CAD has no degrees.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import ezdxf
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from ezdxf import colors, zoom
from ezdxf.enums import TextEntityAlignment
from pyproj import CRS

from pipeline.fsutil import atomic_output
from pipeline.report.condition import ConditionStates
from pipeline.report.defects import UNMEASURED, DefectTables
from pipeline.styles import CONDITION_COLOURS, NON_DEFECT_COLOUR, SEVERITY_COLOURS, STATUS_COLOURS, rgb

APP_ID = "MSAF"  # the extended data's application
LABEL_LAYER = "DEFECT-LABEL"
CHANGE_LABEL_LAYER = "CHANGE-LABEL"
LABEL_HEIGHT_PX = 12  # label text height in pixels of the mask: legible at 1:20 on a 1 mm survey
INSUNITS = {"metre": 6, "foot": 2, "US survey foot": 21}  # DXF $INSUNITS codes of projected CRS units
IMPERIAL = {2, 21}
DEFECT_DATA = ("defect_id", "segment", "class", "severity", "mean_width_mm", "max_width_mm", "width_mm", "length_m")
CHANGE_DATA = (
    "change_id",
    "class",
    "status",
    "old_max_width_mm",
    "new_max_width_mm",
    "delta_max_width_mm",
    "delta_length_m",
)


def layer_name(*parts: str) -> str:
    """A CAD layer name: upper case, each part's words joined by ``_`` (anything but letters and
    digits, which some CAD programs refuse in names), parts by ``-`` (``CRACK-BELOW_RESOLUTION``)."""
    return "-".join(re.sub(r"[^A-Za-z0-9]+", "_", str(part)).strip("_").upper() for part in parts)


def outline_layer(class_name: str, severity: str) -> str:
    """The layer of a defect's outline (``CRACK-HIGH``)."""
    return layer_name(class_name, severity)


def centreline_layer(severity: str) -> str:
    """The layer of a crack's centreline pieces (``CRACK_CL-HIGH``), coloured by its crack's severity."""
    return layer_name("crack_cl", severity)


def condition_layer(state: str) -> str:
    """The layer of the condition cells in one state (``CONDITION-CS2``); frozen until thawed."""
    return layer_name("condition", state)


def change_layer(status: str) -> str:
    """The layer of the changes with one status (``CHANGE-NOT_FOUND_REPAIRED``)."""
    return layer_name("change", status)


def drawing_units(crs: CRS | None) -> int | None:
    """The DXF ``$INSUNITS`` code of a projected CRS's unit (0: unitless), None for a geographic CRS."""
    if crs is None:
        return 0
    if crs.is_geographic:
        return None
    return INSUNITS.get(crs.axis_info[0].unit_name, 0)


def nearest_aci(colour: str) -> int:
    """The AutoCAD colour index (1-255) closest to ``colour`` in RGB."""
    target = rgb(colour)
    return min(
        range(1, 256),
        key=lambda index: sum((a - b) ** 2 for a, b in zip(colors.aci2rgb(index), target, strict=True)),
    )


class CadDrawing:
    """A DXF drawing being built in one CRS: layers made on first use, each in one colour."""

    def __init__(self, crs: CRS | None, units: int, properties: dict[str, str]) -> None:
        self.doc = ezdxf.new("R2010", units=units)
        self.doc.appids.add(APP_ID)
        self.doc.header["$MEASUREMENT"] = 0 if units in IMPERIAL else 1  # hatch and linetype scales
        self.space = self.doc.modelspace()
        self._describe(crs, properties)

    @classmethod
    def of(cls, crs: Any, properties: dict[str, str] | None = None) -> CadDrawing | None:
        """A drawing in ``crs`` (any pyproj input; None: a bare pixel grid), None for a geographic CRS."""
        parsed = CRS.from_user_input(crs) if crs is not None else None
        units = drawing_units(parsed)
        return None if units is None else cls(parsed, units, properties or {})

    def _describe(self, crs: CRS | None, properties: dict[str, str]) -> None:
        """Drawing properties (DWGPROPS): the CRS the coordinates are in, and who made it for what."""
        custom = self.doc.header.custom_vars
        custom.append("CRS", crs.to_string() if crs is not None else "none (pixel grid)")
        if crs is not None:
            custom.append("CRS_NAME", crs.name)
        custom.append("GENERATOR", f"msaf-pipeline {version('msaf-pipeline')}")
        for key, value in properties.items():
            custom.append(key.upper(), str(value))

    def layer(self, name: str, colour: str, hidden: bool = False) -> str:
        """The layer ``name``, made on first use in ``colour`` (true colour, and the nearest index
        colour for programs that show only those); ``hidden``: frozen and off (LibreCAD prints layers
        that are only off)."""
        if name not in self.doc.layers:
            layer = self.doc.layers.add(name, color=nearest_aci(colour))
            layer.rgb = rgb(colour)
            if hidden:
                layer.freeze()
                layer.off()
        return name

    def draw(self, frame: pd.DataFrame, layer: str, data: Sequence[str] = ()) -> None:
        """Each row's geometry on ``layer``: closed polylines for polygon rings (holes too), open ones
        for lines, each with the row's ``data`` columns as extended data."""
        rows = frame[list(data)].to_dict("records") if data else [{}] * len(frame)
        for geometry, row in zip(frame.geometry, rows, strict=True):
            tags = _extended_data({str(k): v for k, v in row.items()})
            for points, closed in _paths(geometry):
                polyline = self.space.add_lwpolyline(points, close=closed, dxfattribs={"layer": layer})
                if tags:
                    polyline.set_xdata(APP_ID, tags)

    def label(self, frame: gpd.GeoDataFrame, texts: Sequence[str], layer: str, height: float) -> None:
        """A text per row beside a point inside its geometry (a centroid can fall outside a curved crack)."""
        self.layer(layer, "#000000")
        self.doc.layers.get(layer).color = 7  # black on white paper, white on a dark screen
        anchors = shapely.point_on_surface(frame.geometry.values)
        for text, anchor in zip(texts, anchors, strict=True):
            entity = self.space.add_text(text, height=height, dxfattribs={"layer": layer})
            entity.set_placement((anchor.x + height / 2, anchor.y), align=TextEntityAlignment.MIDDLE_LEFT)

    def save(self, path: Path, frames: Sequence[gpd.GeoDataFrame | None]) -> None:
        """Write atomically, opening zoomed on ``frames``: real-world coordinates lie kilometres from the origin."""
        bounds = [f.total_bounds for f in frames if f is not None and len(f)]
        if bounds:
            lower, upper = np.min([b[:2] for b in bounds], axis=0), np.max([b[2:] for b in bounds], axis=0)
            self.space.reset_extents((*lower, 0.0), (*upper, 0.0))  # saved as $EXTMIN / $EXTMAX
            zoom.window(self.space, tuple(lower), tuple(upper))
        with atomic_output(path) as tmp:
            self.doc.saveas(tmp)


def _extended_data(row: dict[str, Any]) -> list[tuple[int, object]]:
    """A row's values as DXF extended data: (1000, name) then the value (1071 integer, 1040 real,
    1000 text); empty values left out."""
    tags: list[tuple[int, object]] = []
    for name, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            tags += [(1000, name), (1000, str(value))]
        elif isinstance(value, (int, np.integer)):
            tags += [(1000, name), (1071, int(value))]
        else:
            tags += [(1000, name), (1040, float(value))]
    return tags


def _paths(geometry: object) -> Iterator[tuple[list[tuple[float, float]], bool]]:
    """Each ring (closed, its repeated last vertex dropped) or line of a shapely geometry, as xy lists."""
    if geometry is None or shapely.is_empty(geometry):
        return
    for part in getattr(geometry, "geoms", [geometry]):
        if isinstance(part, shapely.Polygon):
            for ring in (part.exterior, *part.interiors):
                yield [(x, y) for x, y in ring.coords[:-1]], True
        elif isinstance(part, shapely.LineString):
            yield [(x, y) for x, y in part.coords], False


def label_text(row: pd.Series) -> str:
    """``12  0.35 mm`` for a measured crack (its widest width), ``12  0.0310 m²`` for other defects."""
    width = row.get("max_width_mm")
    if isinstance(width, float) and not math.isnan(width):
        return f"{row['defect_id']}  {width:.2f} mm"
    if row.get("severity") == UNMEASURED:
        return f"{row['defect_id']}  (width not measured)"
    return f"{row['defect_id']}  {row['area_m2']:.4f} m²"


def change_label(row: pd.Series) -> str:
    """``3  widened +0.12 mm``: the change's id, its status, and how much it grew where it did."""
    text = f"{row['change_id']}  {row['status']}"
    widening, lengthening = row.get("delta_max_width_mm"), row.get("delta_length_m")
    if isinstance(widening, float) and not math.isnan(widening) and widening > 0:
        text += f" +{widening:.2f} mm"
    if isinstance(lengthening, float) and not math.isnan(lengthening) and lengthening > 0:
        text += f" +{lengthening:.3f} m"
    return text


def write_dxf(
    path: Path,
    tables: DefectTables,
    condition: ConditionStates | None,
    pixel_size: float,
    properties: dict[str, str] | None = None,
) -> bool:
    """The survey's defect drawing, written atomically; False (and no drawing left) for a geographic CRS.

    ``pixel_size``: the mask's pixel in CRS units (sizes the labels); ``properties``: the job's
    details, stored as drawing properties beside the CRS.
    """
    drawing = CadDrawing.of(tables.crs, properties)
    if drawing is None:
        path.unlink(missing_ok=True)
        return False
    defects = tables.defects
    for (name, severity), group in defects.groupby(["class", "severity"], sort=False):
        layer = drawing.layer(outline_layer(str(name), str(severity)), SEVERITY_COLOURS[str(severity)])
        drawing.draw(group, layer, [c for c in DEFECT_DATA if c in group])
    if len(tables.centerlines) and len(defects):
        rated = tables.centerlines.merge(defects[["defect_id", "class", "severity"]], on="defect_id")
        for severity, group in rated.groupby("severity", sort=False):
            layer = drawing.layer(centreline_layer(str(severity)), SEVERITY_COLOURS[str(severity)])
            drawing.draw(group, layer, [c for c in DEFECT_DATA if c in group])
    if tables.non_defects is not None:
        for name, joints in tables.non_defects.groupby("class"):
            drawing.draw(joints, drawing.layer(layer_name(str(name)), NON_DEFECT_COLOUR))
    if condition is not None:
        for state, cells in condition.cells.groupby("condition_state"):
            colour = CONDITION_COLOURS.get(str(state), NON_DEFECT_COLOUR)
            drawing.draw(cells, drawing.layer(condition_layer(str(state)), colour, hidden=True))
    if len(defects):
        texts = [label_text(row) for _, row in defects.iterrows()]
        drawing.label(defects, texts, LABEL_LAYER, LABEL_HEIGHT_PX * pixel_size)
    drawing.save(path, [defects, tables.non_defects, condition.cells if condition is not None else None])
    return True


def write_change_dxf(path: Path, changes: gpd.GeoDataFrame, pixel_size: float) -> None:
    """The comparison's drawing: each change's outline on the layer of its status, in the status
    colours of the change map, labelled with its id, status and growth (compare works in a
    projected CRS, so there is always one)."""
    drawing = CadDrawing.of(changes.crs)
    if drawing is None:
        raise ValueError(f"changes in a geographic CRS: {changes.crs}")  # compare reprojects before this
    for status, group in changes.groupby("status", sort=False):
        layer = drawing.layer(change_layer(str(status)), STATUS_COLOURS.get(str(status), NON_DEFECT_COLOUR))
        drawing.draw(group, layer, [c for c in CHANGE_DATA if c in group])
    if len(changes):
        texts = [change_label(row) for _, row in changes.iterrows()]
        drawing.label(changes, texts, CHANGE_LABEL_LAYER, LABEL_HEIGHT_PX * pixel_size)
    drawing.save(path, [changes])
