"""How fast and how lean the CAD drawing (defects.dxf) is written: entities streamed as DXF tags
(as shipped, ``pipeline.report.cad``) against the same drawing built entity by entity in ezdxf's
document (the obvious way, and this module's first version), measured in the same run on the same
defect tables.

The tables are a survey's worth of cracks: each a 0.2 m long, 3 mm wide outline of ~20 vertices
with ten 20-px centreline pieces, in three severities, at 1 mm GSD in UTM (a 32768² survey of the
condition bench held 80 530 pieces). Peak memory is Python's (tracemalloc) above the tables.

    python bench/cad_speed.py [--defects 2000 20000] [--out metrics/cad_speed.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import ezdxf
import geopandas as gpd
import numpy as np
import pandas as pd
from ezdxf.enums import TextEntityAlignment
from machine import machine  # beside this script
from pyproj import CRS
from rich.console import Console
from rich.table import Table
from shapely.geometry import LineString, box

from pipeline.report.cad import (
    APP_ID,
    LABEL_HEIGHT_PX,
    LABEL_LAYER,
    centreline_layer,
    label_text,
    outline_layer,
    write_dxf,
)
from pipeline.report.defects import CENTERLINE_COLUMNS, DEFECT_COLUMNS, DefectTables

PIECES_PER_CRACK = 10
PIXEL_M = 0.001


def defect_tables(count: int, seed: int = 0) -> DefectTables:
    """``count`` cracks scattered over 100 m x 100 m of UTM 33N, each with its centreline pieces."""
    rng = np.random.default_rng(seed)
    x, y = 500_000 + rng.uniform(0, 100, count), 5_000_000 + rng.uniform(0, 100, count)
    severities = ("low", "medium", "high")
    rows = [
        {name: None for name in DEFECT_COLUMNS}
        | {
            "defect_id": i + 1,
            "class": "crack",
            "severity": severities[i % 3],
            "area_m2": 0.0006,
            "length_m": 0.2,
            "mean_width_mm": 0.2 + i % 7 / 10,
            "max_width_mm": 0.3 + i % 7 / 10,
        }
        for i in range(count)
    ]
    outlines = [box(a, b, a + 0.2, b + 0.003).buffer(0.001, 2) for a, b in zip(x, y, strict=True)]
    defects = gpd.GeoDataFrame(rows, geometry=outlines, crs="EPSG:32633")
    step = 0.2 / PIECES_PER_CRACK
    pieces = [
        {"defect_id": i + 1, "segment": s + 1, "length_m": step, "width_mm": 0.3, "width_method": "image"}
        for i in range(count)
        for s in range(PIECES_PER_CRACK)
    ]
    lines = [
        LineString([(a + s * step, b + 0.0015), (a + (s + 1) * step, b + 0.0015)])
        for a, b in zip(x, y, strict=True)
        for s in range(PIECES_PER_CRACK)
    ]
    centerlines = gpd.GeoDataFrame(pieces, geometry=lines, crs="EPSG:32633")[CENTERLINE_COLUMNS]
    return DefectTables(defects, centerlines, pd.DataFrame(), CRS.from_epsg(32633))


def entity_by_entity(path: Path, tables: DefectTables) -> None:
    """The baseline: the same layers, outlines, centrelines, extended data and labels, each entity
    an ezdxf object in the document until it is saved."""
    doc = ezdxf.new("R2010", units=6)
    doc.appids.add(APP_ID)
    space = doc.modelspace()
    defects = tables.defects
    severity_of = dict(zip(defects["defect_id"], defects["severity"], strict=True))
    for _, row in defects.iterrows():
        layer = outline_layer(row["class"], row["severity"])
        if layer not in doc.layers:
            doc.layers.add(layer)
        tags = [(1000, "defect_id"), (1071, int(row["defect_id"])), (1000, "severity"), (1000, row["severity"])]
        for polygon in getattr(row.geometry, "geoms", [row.geometry]):
            for ring in (polygon.exterior, *polygon.interiors):
                entity = space.add_lwpolyline(ring.coords[:-1], close=True, dxfattribs={"layer": layer})
                entity.set_xdata(APP_ID, tags)
    for _, piece in tables.centerlines.iterrows():
        layer = centreline_layer(severity_of[piece["defect_id"]])
        if layer not in doc.layers:
            doc.layers.add(layer)
        entity = space.add_lwpolyline(piece.geometry.coords, dxfattribs={"layer": layer})
        entity.set_xdata(APP_ID, [(1000, "defect_id"), (1071, int(piece["defect_id"]))])
    doc.layers.add(LABEL_LAYER)
    height = LABEL_HEIGHT_PX * PIXEL_M
    for _, row in defects.iterrows():
        anchor = row.geometry.representative_point()
        text = space.add_text(label_text(row), height=height, dxfattribs={"layer": LABEL_LAYER})
        text.set_placement((anchor.x + height / 2, anchor.y), align=TextEntityAlignment.MIDDLE_LEFT)
    doc.saveas(path)


def streamed(path: Path, tables: DefectTables) -> None:
    """As shipped."""
    write_dxf(path, tables, None, PIXEL_M)


def measure(write: Callable[[Path, DefectTables], None], tables: DefectTables, folder: Path) -> dict[str, float]:
    """Seconds, Python's peak memory above the tables (a second run: tracing slows Python 3-5x),
    the file's size and its entity count."""
    path = folder / f"{write.__name__}.dxf"
    started = time.perf_counter()
    write(path, tables)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    write(path, tables)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    entities = sum(1 for line in path.open(encoding="utf-8") if line in ("LWPOLYLINE\n", "TEXT\n"))
    return {"s": seconds, "peak_mb": peak / 2**20, "file_mb": path.stat().st_size / 1e6, "entities": entities}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defects", type=int, nargs="+", default=[2000, 20000], help="cracks per drawing")
    parser.add_argument("--out", type=Path, help="JSON file for the numbers")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.defects:
            tables = defect_tables(count)
            baseline, shipped = measure(entity_by_entity, tables, Path(tmp)), measure(streamed, tables, Path(tmp))
            if baseline["entities"] != shipped["entities"]:
                raise SystemExit(f"the drawings differ: {baseline['entities']} and {shipped['entities']} entities")
            rows.append(
                {"defects": count, "pieces": len(tables.centerlines), "entity_by_entity": baseline, "streamed": shipped}
            )
    table = Table(title="defects.dxf: streamed entities against ezdxf's document, entity by entity")
    for column in ("defects", "pieces", "entities", "ezdxf s", "streamed s", "x faster", "ezdxf MB", "streamed MB"):
        table.add_column(column, justify="right")
    for row in rows:
        base, now = row["entity_by_entity"], row["streamed"]
        table.add_row(
            str(row["defects"]),
            str(row["pieces"]),
            str(now["entities"]),
            f"{base['s']:.2f}",
            f"{now['s']:.2f}",
            f"{base['s'] / now['s']:.1f}",
            f"{base['peak_mb']:.0f}",
            f"{now['peak_mb']:.0f}",
        )
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
