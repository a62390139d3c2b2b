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


@pytest.mark.parametrize(
    ("crs", "lon_lat", "expected"),
    [
        ("EPSG:32633", (15.0, 45.0), 32633),  # UTM in its own zone: true scale within 0.04 %
        ("EPSG:3035", (10.0, 52.0), 3035),  # the EU's equal-area grid near its centre
        ("EPSG:3857", (15.0, 45.0), 32633),  # Mercator's metres are 1.41 ground metres at 45° N
        ("EPSG:3857", (-73.9, 40.7), 32618),
        ("EPSG:4326", (-58.4, -34.6), 32721),  # degrees: the zone, on the southern hemisphere
        ("EPSG:32633", (3.0, 45.0), 32631),  # UTM 33 used 12° west of its zone: 1.4 % too long
    ],
)
def test_working_crs_measures_in_ground_metres(crs, lon_lat, expected):
    """Distances between two reports' defects and footprint areas are measured in ground metres:
    the CRS itself when it has true scale there, else the UTM zone of the place."""
    from pipeline.raster.ground import working_crs

    x, y = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(*lon_lat)
    half = 1e-4 if crs == "EPSG:4326" else 10.0
    assert working_crs(crs, (x - half, y - half, x + half, y + half)).to_epsg() == expected
