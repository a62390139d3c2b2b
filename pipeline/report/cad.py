"""The defect map as a CAD drawing (``defects.dxf``): bridge engineers mark cracks up on the
structure's drawings in AutoCAD, BricsCAD or LibreCAD, not in a GIS.

The drawing is in the survey's CRS and its units (so it lands on an orthomosaic or a site plan
inserted at their real-world coordinates), one layer per defect class and severity in the GIS
styles' colours, so a drafter can freeze or re-colour what a drawing needs by layer: defect
outlines, crack centrelines, a label per defect (its id and width, or area), the joints, and the
condition cells (frozen until thawed). Each outline and centreline carries its ``defect_id`` (and
class, severity, widths) as extended data of the application ``MSAF``, the key back to the
GeoPackage's attributes. A geographic CRS has no drawing: CAD has no degrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import ezdxf
import geopandas as gpd
import pandas as pd
import shapely
from ezdxf import colors, zoom
from ezdxf.document import Drawing
from ezdxf.enums import TextEntityAlignment
from pyproj import CRS

from pipeline.fsutil import atomic_output
from pipeline.report.condition import ConditionStates
from pipeline.report.defects import DefectTables
from pipeline.styles import CONDITION_COLOURS, NON_DEFECT_COLOUR, SEVERITY_COLOURS, rgb

APP_ID = "MSAF"  # the extended data's application: defect_id, class, severity, widths
LABEL_LAYER = "DEFECT-LABEL"
LABEL_HEIGHT_PX = 12  # labels about as tall as a wide crack is long in a 12-px stretch: legible at 1:20
INSUNITS = {"metre": 6, "foot": 2, "US survey foot": 21}  # DXF $INSUNITS codes of projected CRS units


def layer_name(*parts: str) -> str:
    """A CAD layer name: upper case, words joined by ``_`` and parts by ``-`` (``CRACK-BELOW_RESOLUTION``)."""
    return "-".join("_".join(str(part).upper().split()) for part in parts)


def outline_layer(class_name: str, severity: str) -> str:
    """The layer of a defect's outline (``CRACK-HIGH``)."""
    return layer_name(class_name, severity)


def centreline_layer(severity: str) -> str:
    """The layer of a crack's centreline pieces (``CRACK_CL-HIGH``), coloured by its crack's severity."""
    return layer_name("crack_cl", severity)


def condition_layer(state: str) -> str:
    """The layer of the condition cells in one state (``CONDITION-CS2``); frozen until thawed."""
    return layer_name("condition", state)


def drawing_units(crs: CRS | None) -> int | None:
    """The DXF ``$INSUNITS`` code of a projected CRS's unit (0: unitless), None for a geographic CRS."""
    if crs is None:
        return 0
    if crs.is_geographic:
        return None
    return INSUNITS.get(crs.axis_info[0].unit_name, 0)


def write_dxf(
    path: Path,
    tables: DefectTables,
    condition: ConditionStates | None,
    pixel_size: float,
    properties: dict[str, str] | None = None,
) -> bool:
    """Write the drawing atomically; False (and nothing written) when the CRS is geographic.

    ``pixel_size``: the mask's pixel in CRS units (sizes the labels); ``properties``: drawing
    properties (the job's details), stored in the header beside the CRS.
    """
    crs = CRS.from_user_input(tables.crs) if tables.crs is not None else None
    units = drawing_units(crs)
    if units is None:
        path.unlink(missing_ok=True)
        return False
    doc = ezdxf.new("R2010", units=units)
    doc.appids.add(APP_ID)
    doc.header["$MEASUREMENT"] = 0 if units in (2, 21) else 1  # imperial / metric hatch and linetype scales
    _describe(doc, crs, properties or {})
    _draw_defects(doc, tables)
    if tables.non_defects is not None:
        for class_name, joints in tables.non_defects.groupby("class"):
            layer = _layer(doc, layer_name(str(class_name)), NON_DEFECT_COLOUR)
            _polylines(doc, joints.geometry, layer, [None] * len(joints))
    if condition is not None:
        for state, cells in condition.cells.groupby("condition_state"):
            layer = _layer(doc, condition_layer(str(state)), CONDITION_COLOURS.get(str(state), "#bdbdbd"))
            doc.layers.get(layer).freeze()  # the condition map under a crack map: thaw to show (frozen,
            doc.layers.get(layer).off()  # not only off: LibreCAD prints layers that are only off)
            _polylines(doc, cells.geometry, layer, [None] * len(cells))
    _label(doc, tables.defects, LABEL_HEIGHT_PX * pixel_size)
    _zoom_to(doc, tables, condition)
    with atomic_output(path) as tmp:
        doc.saveas(tmp)
    return True


def _describe(doc: Drawing, crs: CRS | None, properties: dict[str, str]) -> None:
    """Drawing properties (DWGPROPS): the CRS the coordinates are in, and who made it for what."""
    doc.header.custom_vars.append("CRS", crs.to_string() if crs is not None else "none (pixel grid)")
    if crs is not None:
        doc.header.custom_vars.append("CRS_NAME", crs.name)
    doc.header.custom_vars.append("GENERATOR", f"msaf-pipeline {version('msaf-pipeline')}")
    for key, value in properties.items():
        doc.header.custom_vars.append(key.upper(), str(value))


def _layer(doc: Drawing, name: str, colour: str) -> str:
    """The layer ``name``, made on first use in ``colour`` (true colour, and the nearest ACI colour
    for CAD programs that show only the 255 indexed ones)."""
    if name not in doc.layers:
        layer = doc.layers.add(name, color=nearest_aci(colour))
        layer.rgb = rgb(colour)
    return name


def nearest_aci(colour: str) -> int:
    """The AutoCAD colour index (1-255) closest to ``colour`` in RGB."""
    target = rgb(colour)
    return min(
        range(1, 256),
        key=lambda index: sum((a - b) ** 2 for a, b in zip(colors.aci2rgb(index), target, strict=True)),
    )


def _draw_defects(doc: Drawing, tables: DefectTables) -> None:
    """Outlines by class and severity, centrelines by their crack's severity, each with its extended data."""
    defects = tables.defects
    for (class_name, severity), group in defects.groupby(["class", "severity"], sort=False):
        layer = _layer(doc, outline_layer(str(class_name), str(severity)), SEVERITY_COLOURS[str(severity)])
        _polylines(doc, group.geometry, layer, [_xdata(row) for row in group.to_dict("records")])
    lines = tables.centerlines
    if not len(lines) or not len(defects):
        return
    rated = lines.merge(defects[["defect_id", "class", "severity"]], on="defect_id", how="inner")
    for severity, group in rated.groupby("severity", sort=False):
        layer = _layer(doc, centreline_layer(str(severity)), SEVERITY_COLOURS[str(severity)])
        _polylines(doc, group.geometry, layer, [_xdata(row) for row in group.to_dict("records")])


XDATA_TEXT = ("class", "severity")
XDATA_INTEGER = ("defect_id", "segment")
XDATA_REAL = ("mean_width_mm", "max_width_mm", "width_mm", "length_m")


def _xdata(row: dict[str, Any]) -> list[tuple[int, object]]:
    """A defect's key and ratings as DXF extended data: (1000, name) then its value (1071 integer,
    1000 text, 1040 real); empty values left out."""
    tags: list[tuple[int, object]] = []
    kinds: tuple[tuple[tuple[str, ...], int, Callable[[Any], object]], ...] = (
        (XDATA_INTEGER, 1071, int),
        (XDATA_TEXT, 1000, str),
        (XDATA_REAL, 1040, float),
    )
    for names, code, kind in kinds:
        for name in names:
            value = row.get(name)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                tags += [(1000, name), (code, kind(value))]
    return tags


def _polylines(
    doc: Drawing, geometries: Iterable[object], layer: str, xdata: list[list[tuple[int, object]] | None]
) -> None:
    """Closed polylines for polygon rings, open ones for lines, on ``layer``, each with its extended data."""
    space = doc.modelspace()
    for geometry, tags in zip(geometries, xdata, strict=True):
        for points, closed in _paths(geometry):
            polyline = space.add_lwpolyline(points, close=closed, dxfattribs={"layer": layer})
            if tags is not None:
                polyline.set_xdata(APP_ID, tags)


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
    if row.get("severity") == "unmeasured":
        return f"{row['defect_id']}  (width not measured)"
    return f"{row['defect_id']}  {row['area_m2']:.4f} m²"


def _label(doc: Drawing, defects: gpd.GeoDataFrame, height: float) -> None:
    """One text per defect beside a point inside it (a centroid can fall outside a curved crack)."""
    if not len(defects):
        return
    layer = _layer(doc, LABEL_LAYER, "#000000")
    doc.layers.get(layer).color = 7  # black on white paper, white on a dark screen
    space = doc.modelspace()
    anchors = shapely.point_on_surface(defects.geometry.values)
    for (_, row), anchor in zip(defects.iterrows(), anchors, strict=True):
        text = space.add_text(label_text(row), height=height, dxfattribs={"layer": layer})
        text.set_placement((anchor.x + height / 2, anchor.y), align=TextEntityAlignment.MIDDLE_LEFT)


def _zoom_to(doc: Drawing, tables: DefectTables, condition: ConditionStates | None) -> None:
    """Open on the drawing, not on the origin: real-world coordinates sit kilometres away from it."""
    frames = [tables.defects, tables.non_defects, condition.cells if condition is not None else None]
    bounds = [f.total_bounds for f in frames if f is not None and len(f)]
    if not bounds:
        return
    minx, miny = min(b[0] for b in bounds), min(b[1] for b in bounds)
    maxx, maxy = max(b[2] for b in bounds), max(b[3] for b in bounds)
    space = doc.modelspace()
    space.reset_extents((minx, miny, 0.0), (maxx, maxy, 0.0))  # saved as $EXTMIN / $EXTMAX
    zoom.window(space, (minx, miny), (maxx, maxy))
