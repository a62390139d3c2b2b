"""How outputs look in a GIS: one owner for the colours of classes, severities and changes, and the
QGIS (QML) and OGC (SLD) styles built from them, so the report, the mask's colour table and the
GeoPackage styles always agree.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple
from xml.sax.saxutils import escape, quoteattr

SEVERITY_COLOURS = {
    "unmeasured": "#bdbdbd",
    "below resolution": "#9e9ac8",
    "low": "#f2c744",
    "medium": "#f08a24",
    "high": "#d7191c",
}
STATUS_COLOURS = {
    "new": "#d7191c",
    "missed before (visible then)": "#f4a582",
    "extended": "#e66101",
    "widened": "#b2182b",
    "grown": "#f08a24",
    "unchanged": "#2c7bb6",
    "shrunk": "#1a9641",
    "not found (repaired?)": "#7b3294",
    "not detected (still visible)": "#c2a5cf",
    "not seen (too dark or blurred)": "#737373",
    "not covered": "#bdbdbd",
}
HISTORY_COLOURS = {  # the trend of a crack over several surveys (pipeline.report.history.TRENDS)
    "growing": "#d7191c",
    "stable": "#2c7bb6",
    "new": "#f08a24",
    "not found (repaired?)": "#7b3294",
    "not seen in every survey": "#737373",
}
CONDITION_COLOURS = {  # AASHTO condition states: good to poor, ranges between their ends
    "CS1": "#1a9641",
    "CS1-CS2": "#a6d96a",
    "CS2": "#f2c744",
    "CS1-CS3": "#bdbdbd",
    "CS2-CS3": "#f08a24",
    "CS3": "#d7191c",
}
CRACK_TYPE_COLOURS = {  # the crack_type column (pipeline.report.crack_types.CrackType)
    "transverse": "#d7191c",
    "longitudinal": "#2c7bb6",
    "diagonal": "#f08a24",
    "map": "#7b3294",
    "irregular": "#8c510a",
    "linear": "#4d4d4d",
}
ELEMENT_COLOUR = "#1b1b1b"
CLASS_PALETTE = ["#d7191c", "#2b83ba", "#fdae61", "#abdda4", "#7b3294", "#008837"]
KNOWN_CLASS_COLOURS = {"crack": "#d7191c", "spall": "#f08a24", "joint": "#8c8cb4"}
MUTED_CLASSES = {"joint"}  # built lines: drawn faintly, never mistaken for defects
CENTERLINE_COLOUR = "#67000d"
NON_DEFECT_COLOUR = "#8c8cb4"


def rgb(hex_colour: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b)."""
    value = hex_colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def class_colours(class_names: list[str]) -> dict[str, str]:
    """A colour per class name: known classes keep theirs, others take the palette in order."""
    spare = itertools.cycle([c for c in CLASS_PALETTE if c not in KNOWN_CLASS_COLOURS.values()])
    return {name: KNOWN_CLASS_COLOURS.get(name) or next(spare) for name in class_names}


def mask_colormap(class_names: list[str]) -> dict[int, tuple[int, int, int, int]]:
    """The mask's colour table: background and nodata transparent, joints faint, defects opaque."""
    colours = class_colours(class_names)
    table = {}
    for index, name in enumerate(class_names):
        alpha = 0 if index == 0 else 110 if name in MUTED_CLASSES else 255
        table[index] = (*rgb(colours[name]), alpha)
    return table  # nodata (255) needs no entry: GIS clients leave nodata transparent


def _qml_colour(hex_colour: str, alpha: int) -> str:
    return ",".join(str(v) for v in (*rgb(hex_colour), alpha))


def _symbol(name: str, kind: str, colour: str, alpha: int = 190, width_mm: float = 0.4) -> str:
    if kind == "line":
        props = {
            "line_color": _qml_colour(colour, 255),
            "line_width": f"{width_mm}",
            "line_width_unit": "MM",
            "line_style": "solid",
            "capstyle": "round",
            "joinstyle": "round",
        }
        layer_class = "SimpleLine"
    else:
        props = {
            "color": _qml_colour(colour, alpha),
            "style": "solid",
            "outline_color": _qml_colour(colour, 255),
            "outline_style": "solid",
            "outline_width": f"{width_mm}",
            "outline_width_unit": "MM",
        }
        layer_class = "SimpleFill"
    body = "".join(f'<prop k="{k}" v="{v}"/>' for k, v in props.items())
    return (
        f'<symbol type="{kind}" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">'
        f'<layer class="{layer_class}" enabled="1" locked="0" pass="0">{body}</layer></symbol>'
    )


REVIEW_COLOUR = "#00a6d6"  # missed cracks drawn by inspectors: apart from every severity colour
REVIEWED_AREA_COLOUR = "#1a9641"


def _value_maps(value_maps: dict[str, tuple[str, ...]]) -> str:
    """QGIS field configuration: a value-map (drop-down) edit widget per field, its first value the default."""
    fields = aliases = defaults = ""
    for index, (field, values) in enumerate(value_maps.items()):
        options = "".join(
            f'<Option type="Map"><Option value={quoteattr(v)} type="QString" name={quoteattr(v)}/></Option>'
            for v in values
        )
        fields += (
            f'<field name={quoteattr(field)} configurationFlags="None"><editWidget type="ValueMap"><config>'
            f'<Option type="Map"><Option type="List" name="map">{options}</Option></Option>'
            "</config></editWidget></field>"
        )
        aliases += f'<alias field={quoteattr(field)} name="" index="{index}"/>'
        defaults += f'<default applyOnUpdate="0" field={quoteattr(field)} expression={quoteattr(repr(values[0]))}/>'
    return (
        f"<fieldConfiguration>{fields}</fieldConfiguration><aliases>{aliases}</aliases><defaults>{defaults}</defaults>"
    )


def qml(
    kind: str,
    colours: dict[str, str] | str,
    field: str | None = None,
    alpha: int = 190,
    width_mm: float = 0.4,
    value_maps: dict[str, tuple[str, ...]] | None = None,
) -> str:
    """A QGIS style: categorised by ``field`` when ``colours`` maps values to colours, else one symbol;
    ``value_maps`` gives fields a drop-down of allowed values (an inspector's review)."""
    if isinstance(colours, str):
        renderer = (
            f'<renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">'
            f"<symbols>{_symbol('0', kind, colours, alpha, width_mm)}</symbols></renderer-v2>"
        )
    else:
        categories = "".join(
            f'<category render="true" symbol="{i}" value={quoteattr(v)} label={quoteattr(v)}/>'
            for i, v in enumerate(colours)
        )
        symbols = "".join(_symbol(str(i), kind, c, alpha, width_mm) for i, c in enumerate(colours.values()))
        renderer = (
            f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(field or "")} symbollevels="0" '
            f'enableorderby="0" forceraster="0"><categories>{categories}</categories>'
            f"<symbols>{symbols}</symbols></renderer-v2>"
        )
    categories = "Symbology|Fields|Forms" if value_maps else "Symbology"
    forms = _value_maps(value_maps) if value_maps else ""
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
        f'<qgis version="3.22.0" styleCategories="{categories}">{renderer}{forms}</qgis>'
    )


def _sld_symbolizer(kind: str, colour: str, alpha: int, width_mm: float) -> str:
    width_px = f"{width_mm * 96 / 25.4:.2f}"
    stroke = (
        f'<se:Stroke><se:SvgParameter name="stroke">{colour}</se:SvgParameter>'
        f'<se:SvgParameter name="stroke-width">{width_px}</se:SvgParameter></se:Stroke>'
    )
    if kind == "line":
        return f"<se:LineSymbolizer>{stroke}</se:LineSymbolizer>"
    return (
        f'<se:PolygonSymbolizer><se:Fill><se:SvgParameter name="fill">{colour}</se:SvgParameter>'
        f'<se:SvgParameter name="fill-opacity">{alpha / 255:.2f}</se:SvgParameter></se:Fill>{stroke}'
        "</se:PolygonSymbolizer>"
    )


def sld(
    layer: str,
    kind: str,
    colours: dict[str, str] | str,
    field: str | None = None,
    alpha: int = 190,
    width_mm: float = 0.4,
) -> str:
    """The same style as OGC SLD 1.1 (for GeoServer, ArcGIS and other non-QGIS clients)."""
    if isinstance(colours, str):
        symbolizer = _sld_symbolizer(kind, colours, alpha, width_mm)
        rules = f"<se:Rule><se:Name>{escape(layer)}</se:Name>{symbolizer}</se:Rule>"
    else:
        rules = "".join(
            f"<se:Rule><se:Name>{escape(value)}</se:Name><ogc:Filter><ogc:PropertyIsEqualTo><ogc:PropertyName>"
            f"{escape(field or '')}</ogc:PropertyName><ogc:Literal>{escape(value)}</ogc:Literal>"
            f"</ogc:PropertyIsEqualTo></ogc:Filter>{_sld_symbolizer(kind, colour, alpha, width_mm)}</se:Rule>"
            for value, colour in colours.items()
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><StyledLayerDescriptor version="1.1.0" '
        'xmlns="http://www.opengis.net/sld" xmlns:se="http://www.opengis.net/se" '
        'xmlns:ogc="http://www.opengis.net/ogc"><NamedLayer><se:Name>' + escape(layer) + "</se:Name>"
        "<UserStyle><se:FeatureTypeStyle>" + rules + "</se:FeatureTypeStyle></UserStyle></NamedLayer>"
        "</StyledLayerDescriptor>"
    )


class StyleSpec(NamedTuple):
    """How one layer is drawn: polygons or lines, coloured by ``field`` (a value -> colour map) or in
    one colour, with its opacity (0-255) and outline width."""

    kind: str  # "fill" or "line"
    colours: dict[str, str] | str
    field: str | None = None
    alpha: int = 190
    width_mm: float = 0.4


DEFECT_FILL = StyleSpec("fill", SEVERITY_COLOURS, "severity")
CONDITION_FILL = StyleSpec("fill", CONDITION_COLOURS, "condition_state", 90, 0.1)
SHARPNESS_COLOURS = {  # the condition cells' sharpness column (pipeline.report.condition)
    "ok": "#1a9641",
    "too blurred": "#f08a24",
    "too plain to tell": "#bdbdbd",
    "not checked": "#ffffff",
}


def _layer_specs() -> dict[str, StyleSpec]:
    """Each styled layer's default style (the review layers' names come from pipeline.review)."""
    from pipeline.review import AREA_LAYER, MISSED_LAYER

    return {
        "defects": DEFECT_FILL,
        "crack_centerlines": StyleSpec("line", CENTERLINE_COLOUR, None, 255, 0.5),
        "cracks": StyleSpec("line", SEVERITY_COLOURS, "severity", 255, 0.8),
        "non_defects": StyleSpec("fill", NON_DEFECT_COLOUR, None, 70, 0.2),
        "changes": StyleSpec("fill", STATUS_COLOURS, "status"),
        "crack_changes": StyleSpec("fill", STATUS_COLOURS, "status"),
        "crack_history": StyleSpec("fill", HISTORY_COLOURS, "trend"),
        "condition_cells": CONDITION_FILL,
        MISSED_LAYER: StyleSpec("line", REVIEW_COLOUR, None, 255, 0.6),
        AREA_LAYER: StyleSpec("fill", REVIEWED_AREA_COLOUR, None, 35, 0.6),
    }


OTHER_SPECS = {  # a layer's styles besides its default: (name, spec)
    "defects": [("crack type", DEFECT_FILL._replace(colours=CRACK_TYPE_COLOURS, field="crack_type"))],
    "condition_cells": [("sharpness", CONDITION_FILL._replace(colours=SHARPNESS_COLOURS, field="sharpness"))],
}


def _rendered(layer: str, spec: StyleSpec) -> tuple[str, str]:
    """(QML, SLD) of a spec; the defects keep their review drop-down in every style."""
    from pipeline.review import REVIEW_FIELD, REVIEW_STATES

    value_maps = {REVIEW_FIELD: REVIEW_STATES} if layer == "defects" else None
    return (
        qml(spec.kind, spec.colours, spec.field, spec.alpha, spec.width_mm, value_maps),
        sld(layer, spec.kind, spec.colours, spec.field, spec.alpha, spec.width_mm),
    )


def layer_style(layer: str) -> tuple[str, str] | None:
    """(QML, SLD) for a layer msaf writes, or None for plain tables."""
    spec = _layer_specs().get(layer)
    return None if spec is None else _rendered(layer, spec)


def other_styles(layer: str) -> list[tuple[str, str, str]]:
    """(name, QML, SLD) of a layer's styles besides its default, for QGIS's Style > Load Style > From
    Database: the defects by crack type (``crack_type``), the condition cells by sharpness."""
    return [(name, *_rendered(layer, spec)) for name, spec in OTHER_SPECS.get(layer, [])]
