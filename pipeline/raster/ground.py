"""True ground size of a pixel anywhere on a raster, in any CRS (geodesic, pyproj): the one owner of
pixel ground size, used by the survey's GSD check and by every measurement of the report.

A projected CRS's metres are not ground metres away from its true-scale lines: Web Mercator
stretches lengths by 1/cos(latitude) (x1.41 at 45°), UTM by up to 1.0010 at a zone's edge.
Measuring each defect with the pixel size at its own location - the geodesic distances between a
pixel's corners on the CRS's ellipsoid - gives the same lengths and areas whatever CRS the
orthomosaic was delivered in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pyproj import CRS as ProjCRS
from pyproj import Geod, Proj, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from rasterio.crs import CRS

from pipeline.errors import MsafError

STRONG_DISTORTION = 0.02  # a CRS whose metres differ from ground metres by more than 2 % here
TRUE_SCALE = 0.01  # a projected CRS within 1 % of ground metres is measured in as it is


@dataclass(frozen=True)
class PixelSize:
    """Ground size of one pixel in metres along x (columns) and y (rows)."""

    x_m: float
    y_m: float

    @property
    def area_m2(self) -> float:
        """Ground area of one pixel in square metres."""
        return self.x_m * self.y_m

    @property
    def mean_m(self) -> float:
        """Mean ground size of a pixel side in metres."""
        return (self.x_m + self.y_m) / 2


def linear_unit_m(crs: Any) -> float:
    """Metres per unit of a projected CRS's first axis (rasterio or pyproj CRS; 1 for metres)."""
    return float(ProjCRS.from_user_input(crs).axis_info[0].unit_conversion_factor)


@lru_cache(maxsize=16)
def _geodesy(wkt: str) -> tuple[Transformer, Geod]:
    crs = ProjCRS.from_wkt(wkt)
    geographic = crs.geodetic_crs
    if geographic is None:
        raise MsafError(f"the CRS {crs.name!r} has no geodetic datum: ground units cannot be measured in it")
    transformer = Transformer.from_crs(crs, geographic, always_xy=True)
    geod = geographic.get_geod() if geographic.ellipsoid is not None else None
    return transformer, geod or Geod(ellps="WGS84")


def ground_pixel_size(crs: CRS, transform, col: float, row: float) -> PixelSize:
    """Ground metres spanned by one pixel's column and row vectors at pixel (col, row)."""
    transformer, geod = _geodesy(crs.to_wkt())
    origin = transform @ (col, row)
    right = transform @ (col + 1, row)
    down = transform @ (col, row + 1)
    lons, lats = transformer.transform([origin[0], right[0], down[0]], [origin[1], right[1], down[1]])
    _, _, x_m = geod.inv(lons[0], lats[0], lons[1], lats[1])
    _, _, y_m = geod.inv(lons[0], lats[0], lons[2], lats[2])
    return PixelSize(float(x_m), float(y_m))


def map_pixel_size(crs: CRS, transform) -> PixelSize | None:
    """A pixel's size in the CRS's own linear unit, in metres (None for a geographic CRS)."""
    if crs.is_geographic:
        return None
    factor = linear_unit_m(crs)
    return PixelSize(math.hypot(transform.a, transform.d) * factor, math.hypot(transform.b, transform.e) * factor)


def ground_sample_distance(crs: CRS, transform, width: int, height: int) -> float:
    """The raster's GSD: the mean ground size of a pixel side at its centre, geodesic (a Web Mercator
    orthomosaic at 45° has 1.41 map metres per ground metre). A CRS without a geodetic datum (a
    local engineering grid) has only its own units to go by."""
    try:
        return ground_pixel_size(crs, transform, width / 2, height / 2).mean_m
    except MsafError:
        size = map_pixel_size(crs, transform)
        if size is None:
            raise
        return size.mean_m


def scale_error(crs: CRS, transform, ground: PixelSize) -> float:
    """How much the CRS's metres overstate the ground metres of a pixel of ``ground`` size (from
    ``ground_pixel_size``): 0.41 for Web Mercator at 45°; 0 for a geographic CRS (its degrees are
    converted geodesically, never read as metres)."""
    nominal = map_pixel_size(crs, transform)
    if nominal is None:
        return 0.0
    return nominal.mean_m / ground.mean_m - 1


def working_crs(crs: Any, bounds: tuple[float, float, float, float]) -> ProjCRS:
    """A CRS whose metres are ground metres over ``bounds`` (left, bottom, right, top in ``crs``), for
    distances and areas between geometries: ``crs`` itself when it is projected with near-true
    scale there, else the WGS 84 UTM zone of the centre (for a geographic CRS, or Web Mercator whose
    metres are 1/cos(latitude) ground metres). A CRS without a datum is kept as it is."""
    own = ProjCRS.from_user_input(crs)
    try:
        transformer, _ = _geodesy(own.to_wkt())
    except MsafError:
        return own
    left, bottom, right, top = bounds
    lon, lat = transformer.transform((left + right) / 2, (bottom + top) / 2)
    if own.is_projected:
        factors = Proj(own).get_factors(lon, lat)
        if abs(factors.meridional_scale - 1) < TRUE_SCALE and abs(factors.parallel_scale - 1) < TRUE_SCALE:
            return own
    zones = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    return ProjCRS.from_epsg(zones[0].code) if zones else own
