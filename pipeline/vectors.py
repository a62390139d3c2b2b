"""Vector layers read in an orthomosaic's CRS: the labels of a label set, and the areas of interest
of label sets and of surveys. Every expected problem is one line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import MsafError

if TYPE_CHECKING:
    import geopandas as gpd

POLYGONS = ("Polygon", "MultiPolygon")  # the geometry types of areas (areas of interest, area labels)


def read_vectors(path: Path, layer: str | None, crs: Any, what: str) -> gpd.GeoDataFrame:
    """The features of ``path`` (its ``layer``, else its first) with a geometry, reprojected to ``crs``;
    ``what`` names them in messages ("labels", "area of interest"). GeoPandas is imported here: a
    survey without an area of interest never loads it."""
    import geopandas as gpd
    import pyogrio

    if not Path(path).is_file():
        raise MsafError(f"{what} not found: {path}")
    try:
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError) as exc:
        raise MsafError(
            f"{path}: cannot read the {what} ({str(exc).splitlines()[0][:120]}); "
            "give a vector file (GPKG, GeoJSON, Shapefile...) and its layer"
        ) from None
    if frame.crs is None:
        raise MsafError(f"{path}: the {what} have no CRS; save them with one (any CRS: they are reprojected)")
    return frame[frame.geometry.notna() & ~frame.geometry.is_empty].to_crs(crs)
