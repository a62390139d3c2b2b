"""An area of interest: the part of an orthomosaic a survey looks at (a deck, a pier face), drawn as
polygons in any vector file GDAL reads (GeoPackage, GeoJSON, Shapefile), in any CRS.

A bridge's orthomosaic holds river, road and trees around the structure, where a crack model finds
"cracks" in asphalt joints and branches, and which cost as much to infer as the structure. Outside
the area the survey treats pixels as nodata, exactly as outside the raster's footprint: tiles that
straddle its edge are filled by mirroring the inside (``pipeline.inference.fill``), blocks wholly
outside are not read at all, and the mask and confidence are nodata there.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import geometry_mask
from shapely.affinity import affine_transform
from shapely.geometry.base import BaseGeometry

from pipeline.errors import MsafError
from pipeline.fingerprint import file_fingerprint
from pipeline.raster.grid import Box
from pipeline.vectors import POLYGONS, read_vectors


@dataclass(frozen=True)
class AreaOfInterest:
    """The polygons to survey, in the raster's pixel coordinates (x = column, y = row), clipped to it."""

    path: str
    pixels: BaseGeometry
    file_fingerprint: str
    area_m2: float
    raster_share: float  # of the raster's pixels

    @property
    def key(self) -> str:
        """What identifies the pixels it keeps (its geometry on the raster's grid): part of a survey's key."""
        return hashlib.sha256(shapely.to_wkb(self.pixels)).hexdigest()[:24]

    def covers(self, box: Box) -> bool:
        """Whether any of ``box`` lies in the area (a block that does not is not read)."""
        return bool(self.pixels.intersects(shapely.box(box.col0, box.row0, box.col1, box.row1)))

    def contains(self, box: Box) -> bool:
        """Whether all of ``box`` lies in the area (nothing to mask)."""
        return bool(self.pixels.contains(shapely.box(box.col0, box.row0, box.col1, box.row1)))

    def inside(self, box: Box) -> np.ndarray:
        """Pixels of ``box`` whose centre lies in the area (bool, (h, w))."""
        shape, offset = (box.height, box.width), Affine.translation(box.col0, box.row0)
        with warnings.catch_warnings():  # pixel coordinates: at the origin the transform is the identity
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return geometry_mask([self.pixels], out_shape=shape, transform=offset, invert=True)

    def record(self) -> dict[str, Any]:
        """What survey.json says of it."""
        return {
            "path": self.path,
            "fingerprint": self.file_fingerprint,
            "area_m2": round(self.area_m2, 3),
            "raster_share": round(self.raster_share, 6),
        }


def read_area_of_interest(
    path: str | Path, layer: str | None, crs: Any, transform: Affine, width: int, height: int
) -> AreaOfInterest:
    """The polygons of ``path`` (its ``layer``, else its first) on the raster's grid; a file that is
    missing, unreadable, without a CRS or a polygon, or beside the raster is one line saying so."""
    path = Path(path)
    frame = read_vectors(path, layer, crs, "area of interest")
    polygons = frame[frame.geometry.geom_type.isin(POLYGONS)]
    if polygons.empty:
        raise MsafError(f"{path}: the area of interest holds no polygon; draw the area to survey as polygons")
    area = shapely.union_all(shapely.make_valid(np.asarray(polygons.geometry.values)))
    to_pixels = ~transform
    pixels = affine_transform(area, [to_pixels.a, to_pixels.b, to_pixels.d, to_pixels.e, to_pixels.c, to_pixels.f])
    pixels = _polygonal(pixels.intersection(shapely.box(0, 0, width, height)))
    if pixels.is_empty or pixels.area < 1:
        raise MsafError(f"{path}: the area of interest does not overlap the orthomosaic")
    pixel_m2 = abs(transform.a * transform.e - transform.b * transform.d)
    share = pixels.area / (width * height)
    return AreaOfInterest(str(path.resolve()), pixels, file_fingerprint(path), pixels.area * pixel_m2, share)


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """Only the polygons of a clipped geometry (a polygon touching the raster's edge leaves lines)."""
    parts = [part for part in shapely.get_parts(geometry) if part.geom_type in POLYGONS]
    return shapely.union_all(parts) if parts else shapely.Polygon()
