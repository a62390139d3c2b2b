"""Write defect tables as GeoPackage (with QGIS/SLD styles), RFC 7946 GeoJSON, CSV and Parquet, each atomically."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from pipeline.fsutil import atomic_output
from pipeline.report.cad import write_dxf
from pipeline.report.condition import ConditionStates
from pipeline.report.cracks import CRACKS_GEOMETRY, CRACKS_LAYER, cracks_of
from pipeline.report.defects import DefectTables
from pipeline.review import REVIEW_LAYERS, empty_review_layers
from pipeline.styles import layer_style, other_styles
from pipeline.survey_folder import SurveyFolder

PROJECTED_COLUMNS = ["centroid_x", "centroid_y", "bbox_minx", "bbox_miny", "bbox_maxx", "bbox_maxy"]
EMPTY_TYPES = {name: spec[0] for name, spec in REVIEW_LAYERS.items()} | {CRACKS_LAYER: CRACKS_GEOMETRY}
LAYER_STYLES_TABLE = """CREATE TABLE layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, f_table_catalog TEXT(256), f_table_schema TEXT(256),
    f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
    useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"""


def write_geopackage(
    path: Path, layers: dict[str, gpd.GeoDataFrame | pd.DataFrame], metadata: dict[str, str] | None = None
) -> None:
    """All layers into one GeoPackage (spatial layers keep their CRS; plain tables have none), with a
    default QGIS style (QML + SLD, table ``layer_styles``) for each styled layer and ``metadata`` as
    GDAL dataset metadata. A GDAL side-car of the file it replaces goes with it (``NAME.aux.xml``, left
    by a reader of an earlier release's file: it holds that file's metadata, which GDAL would merge
    into this one's)."""
    with atomic_output(path, create=False) as tmp:
        first = True
        for name, frame in layers.items():
            # GeoPackage 1.2: read without warnings by the GDAL of current LTR GIS (QGIS 3.22 on Debian 12)
            options = ({"VERSION": "1.2"} | ({"dataset_metadata": metadata} if metadata else {})) if first else {}
            if isinstance(frame, gpd.GeoDataFrame):
                if name in EMPTY_TYPES and not len(frame):  # an empty layer says its geometry type itself
                    options = options | {"geometry_type": EMPTY_TYPES[name]}
                valid_geometries(frame).to_file(tmp, layer=name, driver="GPKG", engine="pyogrio", **options)
            else:
                pyogrio.write_dataframe(frame, tmp, layer=name, driver="GPKG", **options)
            first = False
        _store_styles(tmp, [n for n, f in layers.items() if isinstance(f, gpd.GeoDataFrame)])
    Path(f"{path}.aux.xml").unlink(missing_ok=True)


def _store_styles(path: Path, layers: list[str]) -> None:
    """QGIS's layer_styles convention: QGIS applies a layer's default style when it opens the layer."""
    styled = [(name, style) for name in layers if (style := layer_style(name)) is not None]
    if not styled:
        return
    with sqlite3.connect(path) as con:
        con.execute(LAYER_STYLES_TABLE)
        con.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles')"
        )
        rows = [(name, name, qml, sld, 1, "msaf-pipeline default style") for name, (qml, sld) in styled]
        rows += [
            (name, style, qml, sld, 0, f"msaf-pipeline: {style}")
            for name, _ in styled
            for style, qml, sld in other_styles(name)
        ]
        con.executemany(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
            "styleName, styleQML, styleSLD, useAsDefault, description, owner) "
            "VALUES ('', '', ?, 'geom', ?, ?, ?, ?, ?, '')",
            rows,
        )
    con.close()


def valid_geometries(frame: gpd.GeoDataFrame, grid: float = 0.0) -> gpd.GeoDataFrame:
    """``frame`` with its geometries snapped to ``grid`` (the precision a writer rounds to) and
    valid after it: rounding can make a spike touch its own edge, and GIS clients then refuse or
    silently drop the polygon."""
    geometries = np.asarray(frame.geometry.values, dtype=object)
    invalid = ~shapely.is_valid(geometries)
    geometries[invalid] = shapely.make_valid(geometries[invalid])  # snap-rounding needs valid input
    if grid:
        geometries = shapely.set_precision(geometries, grid)  # and keeps it valid (GEOS snap-rounding)
    return frame.set_geometry(gpd.GeoSeries(geometries, index=frame.index, crs=frame.crs))


def coordinate_decimals(pixel_m: float) -> int:
    """Decimal degrees that keep vertices within a quarter pixel: 9 at 1 mm GSD (0.1 mm). RFC 7946's
    usual 6-7 decimals (10-1 cm) would collapse millimetre cracks into slivers."""
    quarter_pixel_deg = max(pixel_m, 1e-6) / 4 / 111_320
    return int(min(11, max(7, math.ceil(-math.log10(quarter_pixel_deg)))))


def write_geojson(path: Path, frame: gpd.GeoDataFrame, layer: str, pixel_m: float = 0.001) -> None:
    """RFC 7946 GeoJSON: lon/lat (EPSG:4326), counter-clockwise exteriors and clockwise holes, layer
    name ``layer``, coordinates to a quarter pixel; columns in the source CRS's units (centroid,
    bbox) are left out."""
    decimals = coordinate_decimals(pixel_m)
    wgs84 = frame.drop(columns=[c for c in PROJECTED_COLUMNS if c in frame]).to_crs("EPSG:4326")
    wgs84 = valid_geometries(wgs84, 10.0**-decimals)
    with atomic_output(path, create=False) as tmp:
        pyogrio.write_dataframe(wgs84, tmp, layer=layer, driver="GeoJSON", RFC7946="YES", COORDINATE_PRECISION=decimals)


def write_files(
    out_dir: Path,
    tables: DefectTables,
    metadata: dict[str, str],
    condition: ConditionStates,
    pixel_size: float,
    job: dict[str, str],
) -> dict[str, str]:
    """Every file of a report but its page: the GIS files (``write_tables``) and the CAD drawing
    (``write_dxf``, none for a geographic CRS). One call, so that a worker process can write them
    while the page is drawn."""
    outputs = write_tables(out_dir, tables, metadata, condition)
    if write_dxf(out_dir / SurveyFolder.DXF, tables, condition, pixel_size, job):
        outputs["dxf"] = SurveyFolder.DXF
    return outputs


def write_tables(
    out_dir: Path,
    tables: DefectTables,
    metadata: dict[str, str] | None = None,
    condition: ConditionStates | None = None,
) -> dict[str, str]:
    """defects.gpkg (defects, cracks, crack_centerlines, summary, non_defects when any, condition_cells and
    condition_states when assessed, and the empty review layers missed_cracks and reviewed_area for
    the inspector), defects.geojson, defects.csv, defects.parquet."""
    layers: dict[str, gpd.GeoDataFrame | pd.DataFrame] = {
        "defects": tables.defects,
        CRACKS_LAYER: cracks_of(tables.defects, tables.centerlines),
        "crack_centerlines": tables.centerlines,
        "summary": tables.summary,
    }
    if tables.non_defects is not None and len(tables.non_defects):
        layers["non_defects"] = tables.non_defects  # joints: context for the map, never defects
    if condition is not None:
        layers |= {"condition_cells": condition.cells, "condition_states": condition.states}
        if condition.by_element is not None:
            layers["condition_by_element"] = condition.by_element
    layers |= empty_review_layers(tables.crs)
    write_geopackage(out_dir / SurveyFolder.GPKG, layers, metadata)
    pixel_m = (
        math.sqrt(float((tables.defects["area_m2"] / tables.defects["pixels"]).median()))
        if len(tables.defects)
        else 0.001
    )
    write_geojson(out_dir / SurveyFolder.GEOJSON, tables.defects, "defects", pixel_m)
    attributes = pd.DataFrame(tables.defects.drop(columns="geometry"))
    attributes["geometry_wkt"] = tables.defects.geometry.to_wkt()
    with atomic_output(out_dir / SurveyFolder.CSV) as tmp:
        attributes.to_csv(tmp, index=False)
    with atomic_output(out_dir / SurveyFolder.PARQUET) as tmp:
        tables.defects.to_parquet(tmp, index=False)  # GeoParquet: pandas reads it, QGIS maps it
    return {
        "gpkg": SurveyFolder.GPKG,
        "geojson": SurveyFolder.GEOJSON,
        "csv": SurveyFolder.CSV,
        "parquet": SurveyFolder.PARQUET,
    }
