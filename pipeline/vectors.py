"""Vector layers read in an orthomosaic's CRS: the labels of a label set, and the areas of interest
of label sets and of surveys. Every expected problem is one line."""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pipeline.errors import MsafError

if TYPE_CHECKING:
    import geopandas as gpd

POLYGONS = ("Polygon", "MultiPolygon")  # the geometry types of areas (areas of interest, area labels)


@functools.cache
def _pyogrio() -> ModuleType:
    """pyogrio with GDAL's side-car files off. Its GeoPackage driver writes the dataset metadata it
    reads into ``NAME.aux.xml`` beside the file when a read-only open closes (GDAL 3.12): every read
    of a survey's defects.gpkg left one in the survey (`msaf compare` in both surveys it only reads),
    and it outlived the file it described, so a GIS showed a re-made report with the old one's job
    details merged in. Set in pyogrio's own GDAL only: rasterio's (the mask's palette is a side-car)
    is another copy of the library."""
    import pyogrio

    pyogrio.set_gdal_config_options({"GDAL_PAM_ENABLED": "NO"})
    return pyogrio


def read_layer(path: Path, layer: str | None = None) -> gpd.GeoDataFrame:
    """A layer of a vector file (its first without ``layer``), read without writing anything beside
    it. pyogrio's errors pass through for the caller to name."""
    _pyogrio()
    import geopandas as gpd

    return gpd.read_file(path, layer=layer, engine="pyogrio")


def layer_names(path: Path) -> list[str]:
    """The layers and tables of a vector file, read without writing anything beside it."""
    return [str(name) for name, _ in _pyogrio().list_layers(path)]


def read_vectors(path: Path, layer: str | None, crs: Any, what: str) -> gpd.GeoDataFrame:
    """The features of ``path`` (its ``layer``, else its first) with a geometry, reprojected to ``crs``;
    ``what`` names them in messages ("labels", "area of interest"). GeoPandas is imported here: a
    survey without an area of interest never loads it."""
    import pyogrio

    if not Path(path).is_file():
        raise MsafError(f"{what} not found: {path}")
    try:
        frame = read_layer(path, layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError) as exc:
        raise MsafError(
            f"{path}: cannot read the {what} ({str(exc).splitlines()[0][:120]}); "
            "give a vector file (GPKG, GeoJSON, Shapefile...) and its layer"
        ) from None
    if frame.crs is None:
        raise MsafError(f"{path}: the {what} have no CRS; save them with one (any CRS: they are reprojected)")
    return frame[frame.geometry.notna() & ~frame.geometry.is_empty].to_crs(crs)
