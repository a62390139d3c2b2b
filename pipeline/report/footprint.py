"""The ground a survey imaged: its mask's valid pixels as a polygon (what ``msaf compare`` compares
within, and what a report outlines when an area of interest cut the survey)."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import rasterio
import rasterio.features
import shapely
from rasterio.enums import Resampling
from shapely.geometry.base import BaseGeometry

from pipeline.class_ids import NO_CLASS
from pipeline.survey_folder import SurveyFolder

FOOTPRINT_PX = 1024  # the footprint is traced on the mask read at most this many pixels a side


def survey_footprint(survey_dir: Path, crs: pyproj.CRS) -> BaseGeometry | None:
    """The ground a survey imaged (its mask's valid pixels, traced on a decimated read) in ``crs``;
    None when the folder has no mask to read."""
    mask = SurveyFolder(survey_dir).mask
    return mask_footprint(mask, crs) if mask.is_file() else None


def mask_footprint(mask: Path, crs: pyproj.CRS) -> BaseGeometry:
    """The valid pixels of a mask as a polygon in ``crs`` (traced on a read of at most FOOTPRINT_PX a side)."""
    with rasterio.open(mask, driver="GTiff") as ds:
        step = max(1, math.ceil(max(ds.width, ds.height) / FOOTPRINT_PX))
        shape = (max(1, math.ceil(ds.height / step)), max(1, math.ceil(ds.width / step)))
        valid = ds.read(1, out_shape=shape, resampling=Resampling.nearest) != NO_CLASS
        transform = ds.transform @ ds.transform.scale(ds.width / shape[1], ds.height / shape[0])
        source_crs = ds.crs
    polygons = [
        shapely.geometry.shape(g) for g, v in rasterio.features.shapes(valid.astype(np.uint8), transform=transform) if v
    ]
    if not polygons:
        return shapely.geometry.Polygon()
    return gpd.GeoSeries([shapely.union_all(polygons)], crs=source_crs).to_crs(crs).iloc[0]
