"""Write defect tables as GeoPackage, GeoJSON (EPSG:4326), CSV and Parquet, each atomically."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from pipeline.fsutil import atomic_output
from pipeline.report.defects import DefectTables


def write_geopackage(path: Path, layers: dict[str, gpd.GeoDataFrame | pd.DataFrame]) -> None:
    """All layers into one GeoPackage (spatial layers keep their CRS; plain tables have none)."""
    with atomic_output(path) as tmp:
        tmp.unlink()
        for name, frame in layers.items():
            if isinstance(frame, gpd.GeoDataFrame):
                frame.to_file(tmp, layer=name, driver="GPKG", engine="pyogrio")
            else:
                pyogrio.write_dataframe(frame, tmp, layer=name, driver="GPKG")


def write_tables(out_dir: Path, tables: DefectTables) -> dict[str, str]:
    """defects.gpkg (defects, crack_centerlines, summary, non_defects when any), defects.geojson,
    defects.csv, defects.parquet."""
    layers = {"defects": tables.defects, "crack_centerlines": tables.centerlines, "summary": tables.summary}
    if tables.non_defects is not None and len(tables.non_defects):
        layers["non_defects"] = tables.non_defects  # joints: context for the map, never defects
    write_geopackage(out_dir / "defects.gpkg", layers)
    with atomic_output(out_dir / "defects.geojson") as tmp:
        tmp.unlink()
        tables.defects.to_crs("EPSG:4326").to_file(tmp, driver="GeoJSON", engine="pyogrio")
    attributes = pd.DataFrame(tables.defects.drop(columns="geometry"))
    attributes["geometry_wkt"] = tables.defects.geometry.to_wkt()
    with atomic_output(out_dir / "defects.csv") as tmp:
        attributes.to_csv(tmp, index=False)
    with atomic_output(out_dir / "defects.parquet") as tmp:
        tables.defects.to_parquet(tmp, index=False)  # GeoParquet: pandas reads it, QGIS maps it
    return {"gpkg": "defects.gpkg", "geojson": "defects.geojson", "csv": "defects.csv", "parquet": "defects.parquet"}
