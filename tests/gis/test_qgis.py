"""The survey's outputs in a real GIS: QGIS's own Python API (Debian's python3-qgis), headless."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
from PIL import Image

from pipeline.config import ReportConfig
from pipeline.report.build import report_survey
from pipeline.review import REVIEW_STATES
from pipeline.styles import (
    CONDITION_COLOURS,
    CRACK_TYPE_COLOURS,
    REVIEW_COLOUR,
    REVIEWED_AREA_COLOUR,
    SEVERITY_COLOURS,
    SHARPNESS_COLOURS,
    rgb,
)

SYSTEM_PYTHON = "/usr/bin/python3"
RENDER = Path(__file__).with_name("qgis_render.py")


def test_qgis_opens_the_outputs_with_their_styles_and_renders_a_map(tmp_path, surveyed, crack_mosaic):
    assert shutil.which("qgis_process") or Path("/usr/lib/python3/dist-packages/qgis").is_dir(), (
        "python3-qgis missing: `make qgis` (run by `make test`) installs it"
    )
    folder = tmp_path / "survey"
    shutil.copytree(surveyed, folder, ignore=shutil.ignore_patterns(".msaf*"))
    report_survey(folder, ReportConfig())
    # the venv's rasterio/pyproj point GDAL_DATA/PROJ_DATA at their own (newer) data: not for the system's QGIS
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "GDAL_", "PROJ_", "CPL_"))}
    result = subprocess.run(
        [
            SYSTEM_PYTHON,
            str(RENDER),
            str(crack_mosaic[0]),
            str(folder / "mask.tif"),
            str(folder / "defects.gpkg"),
            str(tmp_path / "map.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env | {"QT_QPA_PLATFORM": "offscreen"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(info["valid"].values()), info["valid"]
    assert info["features"] >= 3
    assert info["defects_renderer"] == "categorizedSymbol" and info["defects_field"] == "severity"
    assert info["defects_categories"] == SEVERITY_COLOURS  # the GeoPackage's default style, applied by QGIS
    assert info["lines_renderer"] == "singleSymbol"
    assert "crack type" in info["defects_styles"]  # one click away: Style > Load Style > From Database
    assert info["type_style"] == {
        "renderer": "categorizedSymbol",
        "field": "crack_type",
        "categories": CRACK_TYPE_COLOURS,
    }
    assert info["sharpness_style"] == {  # the condition cells by the image's sharpness, the same way
        "renderer": "categorizedSymbol",
        "field": "sharpness",
        "categories": SHARPNESS_COLOURS,
    }
    cracks = info["cracks"]  # one line per crack, coloured by its rating as the defects are
    assert cracks["valid"] and cracks["geometry"] == "MultiLineString"
    crack_ids = gpd.read_file(folder / "defects.gpkg", layer="defects")["crack_id"]
    assert cracks["features"] == crack_ids[crack_ids > 0].nunique() >= 1
    assert cracks["field"] == "severity" and cracks["categories"] == SEVERITY_COLOURS
    condition = info["condition"]  # the condition map: one cell per 0.5 m of ground, coloured by state
    assert condition["valid"] and condition["features"] >= 2 and condition["renderer"] == "categorizedSymbol"
    assert condition["field"] == "condition_state" and condition["categories"] == CONDITION_COLOURS
    assert info["review_widget"] == "ValueMap" and info["review_values"] == list(REVIEW_STATES)
    assert info["review_default"] == "'unreviewed'"
    for name, geometry, colour in (
        ("missed_cracks", "LineString", REVIEW_COLOUR),
        ("reviewed_area", "Polygon", REVIEWED_AREA_COLOUR),
    ):
        assert info[name] == {
            "valid": True,
            "features": 0,
            "geometry": geometry,
            "crs": "EPSG:32633",
            "editable": True,
            "colour": colour,
        }
    assert info["mask_renderer"] == "paletted"  # the colour table and class names of mask.tif.aux.xml
    classes = info["mask_classes"]
    assert classes["0.0"][0] == "background" and classes["0.0"][2] == 0  # transparent over the orthomosaic
    assert classes["1.0"][:2] == ["crack", "#d7191c"] and classes["1.0"][2] == 255

    picture = np.asarray(Image.open(tmp_path / "map.png").convert("RGB")).astype(int)
    assert picture.std() > 20  # not blank
    grey = (
        (np.abs(picture - picture.mean(axis=2, keepdims=True)).max(axis=2) < 12)
        & (picture.mean(axis=2) > 40)
        & (picture.mean(axis=2) < 200)
    )
    assert grey.mean() > 0.3  # the orthomosaic shows through the mask (background is transparent)
    red = np.all(np.abs(picture - np.array(rgb("#d7191c"))) < 40, axis=2)
    assert red.sum() > 200  # cracks drawn in the mask's crack colour
