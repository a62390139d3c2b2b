"""Both flights' widths of the same cracks, read over the same band of ground.

Each survey's report reads a crack's width over a band around its own mask (``width.py``), and two
flights' masks of one crack differ: the band, its background ring and the centreline pieces move,
and on textured ground (masonry's joints) that alone changes a piece's width by more than a
millimetre between flights (``bench/widening_detection.py --same-band``). So a comparison that has
both orthomosaics reads the *old* survey's cracks twice: in the old orthomosaic and in the new one
warped onto the old grid by the registration, over the old mask's band, skeleton and pieces. What
differs between the two readings is then the ground and the optics, not the masks. A crack that
widened by up to a few pixels still lies in the band (it reaches beyond the mask as far as the
background ring). Band and ring are chosen once, in the old image (the band grows while the ring
is still darker inside than out, as in a report), and used for both readings over the pixels both
images have: a joint beside a crack falls in the same one of them in both flights.

Each flight has its own core model (the contrast of a crack core to its surroundings, learnt from
that image's resolved cracks): the light of two flights differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rasterio
import rasterio.windows

from pipeline.raster.ground import ground_pixel_size
from pipeline.raster.ground_image import GroundGrid, GroundImage
from pipeline.report.measure import CrackMeasure, defect_window, measure_crack, rasterize_defect
from pipeline.report.registration import Registration
from pipeline.report.width import REACH_PX, CoreModel, Darkness, measure_darkness

PAIRED_COLUMNS = ["defect_id", "segment", "width_mm_old", "width_mm_new", "geometry"]


@dataclass
class _Reading:
    """One old crack read in both images."""

    defect_id: int
    measure: CrackMeasure
    pixel_mm: float
    darkness: tuple[Darkness | None, Darkness | None]  # old image, new image


def read_paired_widths(
    old_mask: Path,
    old_cracks: gpd.GeoDataFrame,
    images: tuple[Path, Path],
    registration: Registration,
    crs: pyproj.CRS,
) -> gpd.GeoDataFrame:
    """Per centreline piece of each old crack (``defect_id``, ``segment``): its width in the old
    orthomosaic and in the new one over the same band (NaN where an image shows no contrast), with
    the piece's line, in ``crs``. Empty when the old mask does not lie in ``crs`` (the working CRS
    the registration was measured in)."""
    empty = gpd.GeoDataFrame({c: [] for c in PAIRED_COLUMNS}, geometry="geometry", crs=crs)
    old_image, new_image = GroundImage(images[0], crs), GroundImage(images[1], crs)
    readings: list[_Reading] = []
    with rasterio.open(old_mask) as mask, old_image.reading() as in_old, new_image.reading() as in_new:
        if mask.crs is None or pyproj.CRS.from_user_input(mask.crs) != crs or not len(old_cracks):
            return empty
        to_new = ~registration.transform  # the old frame's ground in the new survey's frame
        for defect_id, geometry in zip(old_cracks["defect_id"], old_cracks.to_crs(crs).geometry, strict=True):
            window = defect_window(geometry, mask.transform, mask.width, mask.height, pad=REACH_PX + 2)
            labels = mask.read(1, window=window)
            pixels = rasterize_defect(geometry, window, mask.transform) & (labels != 0) & (labels != mask.nodata)
            if not pixels.any():
                continue
            transform = rasterio.windows.transform(window, mask.transform)
            centre = geometry.centroid
            col, row = ~mask.transform @ (centre.x, centre.y)
            size = ground_pixel_size(mask.crs, mask.transform, col, row)
            measure = measure_crack(pixels, transform, size)
            others = (labels != 0) & ~pixels
            greys = []
            for image, grid_transform in ((in_old, transform), (in_new, to_new @ transform)):
                grey, valid = image.read(GroundGrid(grid_transform, pixels.shape))
                greys.append(np.where(valid, grey, np.nan).astype(float))
            both = np.isfinite(greys[0]) & np.isfinite(greys[1])  # the same pixels in both readings
            old_grey, new_grey = (np.where(both, grey, np.nan) for grey in greys)
            darkness = [  # band and ring from the old image, for both readings
                measure_darkness(
                    grey,
                    pixels,
                    others,
                    measure.skeleton,
                    measure.chunk_of,
                    measure.chunk_length_px,
                    measure.length_px,
                    guide=guide,
                )
                for grey, guide in ((old_grey, None), (new_grey, old_grey))
            ]
            readings.append(_Reading(int(defect_id), measure, size.mean_m * 1000, (darkness[0], darkness[1])))
    cores = [CoreModel.learn([d for r in readings if (d := r.darkness[i]) is not None]) for i in (0, 1)]
    rows = []
    for reading in readings:
        chunks = len(reading.measure.chunk_length_px)
        widths = [
            cores[i].widths(dark)[1] * reading.pixel_mm if dark is not None else np.full(chunks, np.nan)
            for i, dark in enumerate(reading.darkness)
        ]
        for segment, line in enumerate(reading.measure.chunk_lines):
            if not line.is_empty:
                rows.append(
                    {
                        "defect_id": reading.defect_id,
                        "segment": segment + 1,
                        "width_mm_old": float(widths[0][segment]),
                        "width_mm_new": float(widths[1][segment]),
                        "geometry": line,
                    }
                )
    if not rows:
        return empty
    return gpd.GeoDataFrame(pd.DataFrame(rows), geometry="geometry", crs=crs)
