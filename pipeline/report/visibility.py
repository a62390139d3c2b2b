"""Is a crack that one survey found and the other did not still there in the other's orthomosaic?

Between two flights of unchanged ground, the model misses some thin cracks in one flight and not
in the other (other light, blur, JPEG): unchecked, each is "not found (repaired?)" or "new", and
those were most of the false alarms left after registration (bench/change_stability.py). The
orthomosaics settle it: along the crack's centreline, the line's contrast (the median grey of its
surroundings less the median grey on the line) is read in both images. A crack the new survey missed
whose line still shows in the new image at half its old contrast or more is "not detected (still
visible)"; a new crack whose line already showed in the old image is "missed before (visible then)".
A repair (a patch, a coat) takes the line away; a crack that truly appeared was not there to see.

Reads are tiles of the working CRS around the centreline pieces (TILE_PX a side), so memory is
flat in the crack's length and the raster's size.
"""

from __future__ import annotations

import math
from collections import defaultdict

import geopandas as gpd
import numpy as np
import rasterio.features
from scipy import ndimage

from pipeline.raster.ground_image import GroundGrid, GroundImage

LINE_PX = 1.0  # the line: pixels within this distance of the centreline
AROUND_PX = (4.0, 7.0)  # its surroundings: between these distances
TILE_PX = 512  # centreline pieces are read a tile of this many pixels at a time
MIN_CONTRAST = 8.0  # grey levels: less is no line at all (as the width measurement's floor)
STILL_VISIBLE = 0.5  # a line at this share of its contrast in the other image or more is still there


def line_contrast(image: GroundImage, pieces: gpd.GeoDataFrame, group: str, pixel: float) -> dict[object, float]:
    """Per value of ``pieces[group]``: the median grey around its centreline pieces less the median
    grey on them, in ``image`` read at ``pixel`` (NaN where the image has too little data)."""
    on_line: dict[object, list[np.ndarray]] = defaultdict(list)
    around: dict[object, list[np.ndarray]] = defaultdict(list)
    tile = TILE_PX * pixel
    margin = (AROUND_PX[1] + 2) * pixel
    centres = pieces.geometry.centroid
    keys = (
        np.floor(centres.x.to_numpy() / tile).astype(np.int64),
        np.floor(centres.y.to_numpy() / tile).astype(np.int64),
    )
    with image.reading() as reader:
        for _, tile_pieces in pieces.groupby(list(keys), sort=False):  # one read per tile
            left, bottom, right, top = tile_pieces.total_bounds
            grid = GroundGrid.covering((left - margin, bottom - margin, right + margin, top + margin), pixel)
            luminance, valid = reader.read(grid)
            for value, members in tile_pieces.groupby(group, sort=False):
                line = rasterio.features.rasterize(
                    members.geometry, out_shape=grid.shape, transform=grid.transform, all_touched=True
                ).astype(bool)
                distance = ndimage.distance_transform_edt(~line)
                on_line[value].append(luminance[(distance <= LINE_PX) & valid])
                around[value].append(luminance[(distance >= AROUND_PX[0]) & (distance <= AROUND_PX[1]) & valid])
    contrast = {}
    for value in pieces[group].unique():
        line_grey, around_grey = np.concatenate(on_line[value]), np.concatenate(around[value])
        contrast[value] = (
            float(np.median(around_grey) - np.median(line_grey))
            if line_grey.size >= 4 and around_grey.size >= 8
            else math.nan
        )
    return contrast


def still_visible(contrast: float, reference: float) -> bool:
    """A line of ``contrast`` is the same line as one of ``reference`` contrast, still to be seen."""
    return bool(np.isfinite(contrast) and contrast >= max(MIN_CONTRAST, STILL_VISIBLE * np.nan_to_num(reference)))
