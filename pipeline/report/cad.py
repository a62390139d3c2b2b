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

import io
import math
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, TextIO

import ezdxf
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from ezdxf import colors, zoom
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


FIRST_HANDLE = 0x10000  # streamed entities' handles start above every handle of the document's tables


class CadDrawing:
    """A DXF drawing being built in one CRS: layers made on first use, each in one colour.

    ezdxf makes the document (header, layer and style tables, layouts); the entities are streamed
    as DXF tags into a temporary file as they come and spliced into its ENTITIES section on save:
    ezdxf keeps ~2.4 kB per entity in memory and spends ~0.13 ms on it, which a large survey's
    hundred thousand centreline pieces would turn into a quarter of a gigabyte and half a minute
    (``bench/cad_speed.py``). The tags are those ezdxf writes for the same entities (tested).
    """

    def __init__(self, crs: CRS | None, units: int, properties: dict[str, str]) -> None:
        self.doc = ezdxf.new("R2010", units=units)
        self.doc.appids.add(APP_ID)
        self.doc.header["$MEASUREMENT"] = 0 if units in IMPERIAL else 1  # hatch and linetype scales
        self.space = self.doc.modelspace()
        self.entities = EntityStream(self.space.block_record_handle)
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

    def draw(
        self,
        frame: pd.DataFrame,
        layer: str,
        data: Sequence[str] = (),
        rows: np.ndarray | None = None,
        constants: Mapping[str, Any] | None = None,
    ) -> None:
        """The geometries of ``frame`` (of its ``rows``, positions; default all) on ``layer``: closed
        polylines for polygon rings (holes too), open ones for lines, each with its ``data`` values
        (columns, or ``constants`` for the whole group) as extended data."""
        given = dict(constants or {})
        columns = [name for name in data if name not in given and name in frame]
        named = [name for name in data if name in given or name in columns]  # in the order of ``data``
        for chunk in _chunks(frame, rows):
            values = chunk[columns].to_dict("records") if columns else [{}] * len(chunk)
            tags = [extended_data({name: merged[name] for name in named}) for merged in (v | given for v in values)]
            for row, points, closed in paths(np.asarray(chunk.geometry.values, dtype=object)):
                self.entities.polyline(layer, points, closed, tags[row])

    def label(
        self, frame: gpd.GeoDataFrame, text_of: Callable[[dict[str, Any]], str], layer: str, height: float
    ) -> None:
        """A text per row (``text_of`` its columns) beside a point inside its geometry (a centroid can
        fall outside a curved crack)."""
        self.layer(layer, "#000000")
        self.doc.layers.get(layer).color = 7  # black on white paper, white on a dark screen
        for chunk in _chunks(frame):
            anchors = shapely.get_coordinates(shapely.point_on_surface(np.asarray(chunk.geometry.values, dtype=object)))
            rows = pd.DataFrame(chunk.drop(columns=chunk.geometry.name)).to_dict("records")
            for row, (x, y) in zip(rows, anchors, strict=True):
                self.entities.text(layer, text_of({str(k): v for k, v in row.items()}), (x + height / 2, y), height)

    def save(self, path: Path, frames: Sequence[gpd.GeoDataFrame | None]) -> None:
        """Write atomically, opening zoomed on ``frames``: real-world coordinates lie kilometres from the origin."""
        bounds = [f.total_bounds for f in frames if f is not None and len(f)]
        if bounds:
            lower, upper = np.min([b[:2] for b in bounds], axis=0), np.max([b[2:] for b in bounds], axis=0)
            self.space.reset_extents((*lower, 0.0), (*upper, 0.0))  # saved as $EXTMIN / $EXTMAX
            zoom.window(self.space, tuple(lower), tuple(upper))
        skeleton = io.StringIO()
        self.doc.write(skeleton)
        head, tail = _split_at_entities(skeleton.getvalue(), self.entities.next_handle)
        with atomic_output(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as out:
            out.write(head)
            self.entities.copy_to(out)
            out.write(tail)
        self.entities.close()


class EntityStream:
    """Model space entities as DXF tag text, written to a temporary file as they come."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.next_handle = FIRST_HANDLE
        # anonymous, so gone when closed: by CadDrawing.save, or by the collector after an error
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")  # noqa: SIM115

    def _head(self, kind: str, layer: str, subclass: str) -> str:
        handle, self.next_handle = self.next_handle, self.next_handle + 1
        return f"  0\n{kind}\n  5\n{handle:X}\n330\n{self.owner}\n100\nAcDbEntity\n  8\n{layer}\n100\n{subclass}\n"

    def polyline(self, layer: str, points: np.ndarray, closed: bool, xdata: str = "") -> None:
        """An LWPOLYLINE through ``points`` (n x 2), closed or open, with extended data tags ``xdata``."""
        vertices = "".join(f" 10\n{float(x)!r}\n 20\n{float(y)!r}\n" for x, y in points.tolist())
        head = self._head("LWPOLYLINE", layer, "AcDbPolyline")
        self.file.write(f"{head} 90\n{len(points)}\n 70\n{int(closed)}\n{vertices}{xdata}")

    def text(self, layer: str, text: str, anchor: tuple[float, float], height: float) -> None:
        """A TEXT of ``height`` whose left end's middle is at ``anchor``."""
        x, y = (repr(float(v)) for v in anchor)
        self.file.write(
            f"{self._head('TEXT', layer, 'AcDbText')} 10\n{x}\n 20\n{y}\n 30\n0.0\n 40\n{float(height)!r}\n"
            f"  1\n{_one_line(text)}\n 72\n0\n 11\n{x}\n 21\n{y}\n 31\n0.0\n100\nAcDbText\n 73\n2\n"
        )

    def copy_to(self, out: TextIO) -> None:
        """Everything streamed so far, into ``out``."""
        self.file.seek(0)
        shutil.copyfileobj(self.file, out)

    def close(self) -> None:
        """Drop the streamed entities (the temporary file)."""
        self.file.close()


def _chunks(frame: pd.DataFrame, rows: np.ndarray | None = None, size: int = 4096) -> Iterator[pd.DataFrame]:
    """``frame``'s ``rows`` (positions; default all) a few thousand at a time: drawing costs memory
    by the chunk, not by the survey."""
    positions = np.arange(len(frame)) if rows is None else rows
    for start in range(0, len(positions), size):
        yield frame.iloc[positions[start : start + size]]


def _groups(frame: pd.DataFrame, keys: str | list[str]) -> Iterator[tuple[Any, np.ndarray]]:
    """Each value of ``keys`` in ``frame`` with the positions of its rows, in order of appearance
    (positions, not copies of the rows)."""
    if len(frame):
        for key, rows in frame.groupby(keys, sort=False).indices.items():
            yield key, np.asarray(rows)


def _one_line(text: object) -> str:
    """A DXF tag value: one line."""
    return " ".join(str(text).splitlines())


def _split_at_entities(skeleton: str, handle_seed: int) -> tuple[str, str]:
    """The document's text before and after the body of its (empty) ENTITIES section, with
    ``$HANDSEED`` raised past the streamed entities' handles."""
    seed = re.search(r"\$HANDSEED\n  5\n([0-9A-Fa-f]+)\n", skeleton)
    if seed is None or int(seed.group(1), 16) > FIRST_HANDLE:
        raise RuntimeError("the DXF document's own handles reach the streamed entities' range")
    skeleton = skeleton[: seed.start(1)] + f"{handle_seed:X}" + skeleton[seed.end(1) :]
    marker = "  0\nSECTION\n  2\nENTITIES\n"
    cut = skeleton.index(marker) + len(marker)
    return skeleton[:cut], skeleton[cut:]


def extended_data(row: dict[str, Any]) -> str:
    """A row's values as DXF extended data tags of the application ``MSAF``: (1000, name) then the
    value (1071 integer, 1040 real, 1000 text); empty values left out, nothing without values."""
    tags = []
    for name, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            tags.append(f"1000\n{name}\n1000\n{_one_line(value)}\n")
        elif isinstance(value, (int, np.integer)):
            tags.append(f"1000\n{name}\n1071\n{int(value)}\n")
        else:
            tags.append(f"1000\n{name}\n1040\n{float(value)!r}\n")
    return f"1001\n{APP_ID}\n" + "".join(tags) if tags else ""


def paths(geometries: np.ndarray) -> Iterator[tuple[int, np.ndarray, bool]]:
    """(row, n x 2 vertices, closed) for each polygon ring (its repeated last vertex dropped) and
    line of an array of shapely geometries, row by row (rings of a row in order), vectorised."""
    parts, part_row = shapely.get_parts(geometries, return_index=True)
    kinds = shapely.get_type_id(parts)
    polygons, lines = kinds == shapely.GeometryType.POLYGON, np.isin(kinds, (1, 2))  # LineString, LinearRing
    rings, ring_part = shapely.get_rings(parts[polygons], return_index=True)
    pieces = np.concatenate([rings, parts[lines]])
    rows = np.concatenate([part_row[polygons][ring_part], part_row[lines]]).astype(int)
    closed = np.concatenate([np.ones(len(rings), bool), np.zeros(int(lines.sum()), bool)])
    order = np.argsort(rows, kind="stable")
    coordinates, piece = shapely.get_coordinates(pieces[order], return_index=True)
    ends = np.cumsum(np.bincount(piece, minlength=len(pieces)))
    for k, index in enumerate(order):
        points = coordinates[(ends[k - 1] if k else 0) : ends[k]]
        if closed[index]:
            points = points[:-1]
        if len(points) >= 2:
            yield int(rows[index]), points, bool(closed[index])


def label_text(row: Mapping[str, Any]) -> str:
    """``12  0.35 mm`` for a measured crack (its widest width), ``12  0.0310 m²`` for other defects."""
    width = row.get("max_width_mm")
    if isinstance(width, float) and not math.isnan(width):
        return f"{row['defect_id']}  {width:.2f} mm"
    if row.get("severity") == UNMEASURED:
        return f"{row['defect_id']}  (width not measured)"
    return f"{row['defect_id']}  {row['area_m2']:.4f} m²"


def change_label(row: Mapping[str, Any]) -> str:
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
    defects, lines = tables.defects, tables.centerlines
    for (name, severity), rows in _groups(defects, ["class", "severity"]):
        layer = drawing.layer(outline_layer(str(name), str(severity)), SEVERITY_COLOURS[str(severity)])
        drawing.draw(defects, layer, DEFECT_DATA, rows)
    if len(lines) and len(defects):  # each piece on its crack's severity layer, rated like its crack
        rating = defects.set_index("defect_id")[["class", "severity"]]
        rated = pd.DataFrame({k: lines["defect_id"].map(rating[k]) for k in rating.columns}, index=lines.index)
        for (name, severity), rows in _groups(rated, ["class", "severity"]):
            layer = drawing.layer(centreline_layer(str(severity)), SEVERITY_COLOURS[str(severity)])
            drawing.draw(lines, layer, DEFECT_DATA, rows, {"class": name, "severity": severity})
    if tables.non_defects is not None:
        for name, rows in _groups(tables.non_defects, "class"):
            drawing.draw(tables.non_defects, drawing.layer(layer_name(str(name)), NON_DEFECT_COLOUR), (), rows)
    if condition is not None:
        for state, rows in _groups(condition.cells, "condition_state"):
            colour = CONDITION_COLOURS.get(str(state), NON_DEFECT_COLOUR)
            drawing.draw(condition.cells, drawing.layer(condition_layer(str(state)), colour, hidden=True), (), rows)
    if len(defects):
        drawing.label(defects, label_text, LABEL_LAYER, LABEL_HEIGHT_PX * pixel_size)
    drawing.save(path, [defects, tables.non_defects, condition.cells if condition is not None else None])
    return True


def write_change_dxf(path: Path, changes: gpd.GeoDataFrame, pixel_size: float) -> None:
    """The comparison's drawing: each change's outline on the layer of its status, in the status
    colours of the change map, labelled with its id, status and growth (compare works in a
    projected CRS, so there is always one)."""
    drawing = CadDrawing.of(changes.crs)
    if drawing is None:
        raise ValueError(f"changes in a geographic CRS: {changes.crs}")  # compare reprojects before this
    for status, rows in _groups(changes, "status"):
        layer = drawing.layer(change_layer(str(status)), STATUS_COLOURS.get(str(status), NON_DEFECT_COLOUR))
        drawing.draw(changes, layer, CHANGE_DATA, rows)
    if len(changes):
        drawing.label(changes, change_label, CHANGE_LABEL_LAYER, LABEL_HEIGHT_PX * pixel_size)
    drawing.save(path, [changes])
