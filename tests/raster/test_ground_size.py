"""The GSD a survey checks is the ground's, whatever CRS the orthomosaic was delivered in."""

import numpy as np
import pyproj
import pytest
from rasterio.transform import from_origin

from pipeline.config import ScalingConfig
from pipeline.raster.source import open_source
from tests.conftest import write_raster


def test_a_web_mercator_orthomosaic_has_the_gsd_of_its_ground(tmp_path):
    """1.414 mm Web Mercator pixels at 45° N are 1 mm on the ground (Mercator stretches by
    1/cos(latitude)): the survey compares 1 mm with the model's GSD, not 1.41 mm."""
    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(15.0, 45.0)
    data = np.zeros((3, 64, 64), np.uint8)
    mercator = write_raster(tmp_path / "m.tif", data, crs="EPSG:3857", transform=from_origin(x, y, 0.001414, 0.001414))
    info = open_source(mercator, ScalingConfig())
    assert info.gsd_m == pytest.approx(0.001414 * np.cos(np.radians(45.0)), rel=2e-3)
    local = write_raster(
        tmp_path / "l.tif", data, crs="EPSG:32633", transform=from_origin(500000, 4983000, 0.001, 0.001)
    )
    assert open_source(local, ScalingConfig()).gsd_m == pytest.approx(
        0.001 / 0.9996, rel=1e-4
    )  # UTM's central meridian
