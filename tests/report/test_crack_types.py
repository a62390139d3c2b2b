"""Crack types (transverse, longitudinal, diagonal, map, irregular) read against the element's or
the structure's axis: the rules, the axes, and cracks drawn as a model's mask draws them (meandering,
1-4 px wide, with spurs and gaps) through `msaf report`."""

from __future__ import annotations

import math
import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from scipy import ndimage
from skimage.draw import line as draw_line

from pipeline.config import ElementsConfig, ReportConfig
from pipeline.errors import MsafError
from pipeline.job import parse_job
from pipeline.report.crack_types import (
    Axis,
    AxisSource,
    CrackShape,
    CrackType,
    StructureAxes,
    angle_between,
    crack_type,
    outline_axis,
)
from pipeline.report.defects import build_defects
from pipeline.report.elements import read_elements
from tests.conftest import assert_one_line_error, msaf_in_process, run_msaf, write_mask_survey

X0, Y0 = 400000.0, 5000000.0  # write_mask_survey's top-left corner (EPSG:32633, 1 mm pixels)
EAST_WEST = Axis(90.0, AxisSource.JOB)


@pytest.mark.parametrize(
    ("shape", "axis", "expected", "angle"),
    [
        (CrackShape(90, 0.05, 0), EAST_WEST, CrackType.LONGITUDINAL, 0),
        (CrackShape(115, 0.05, 0), EAST_WEST, CrackType.LONGITUDINAL, 25),
        (CrackShape(0, 0.05, 0), EAST_WEST, CrackType.TRANSVERSE, 90),
        (CrackShape(170, 0.05, 0), EAST_WEST, CrackType.TRANSVERSE, 80),
        (CrackShape(45, 0.2, 1), EAST_WEST, CrackType.DIAGONAL, 45),
        (CrackShape(45, 0.2, 3), EAST_WEST, CrackType.MAP, math.nan),
        (CrackShape(45, 0.6, 0), EAST_WEST, CrackType.IRREGULAR, math.nan),
        (CrackShape(45, 0.05, 0), None, CrackType.LINEAR, math.nan),
    ],
)
def test_the_rules(shape, axis, expected, angle):
    kind, measured = crack_type(shape, axis)
    assert kind is expected
    assert measured == pytest.approx(angle, abs=1e-9, nan_ok=True)


def test_angles_between_lines_and_the_long_side_of_an_outline():
    assert angle_between(10, 170) == pytest.approx(20) and angle_between(0, 90) == 90 and angle_between(135, 45) == 90
    span = shapely.affinity.rotate(shapely.box(-5, -1, 5, 1), -72 + 90, origin=(0, 0))  # 10 x 2, long side at 72°
    assert outline_axis(span) == pytest.approx(72, abs=1e-6)
    assert outline_axis(shapely.box(0, 0, 10, 9)) is None  # squarish: no axis from the outline
    assert outline_axis(shapely.box(0, 0, 2, 10)) == pytest.approx(0, abs=1e-6)  # runs north


def test_the_structure_axis_is_a_checked_job_detail():
    assert parse_job(["axis_deg=252"])["axis_deg"] == "72"
    with pytest.raises(MsafError, match=re.escape("axis_deg 'north' is not a number")):
        parse_job(["axis_deg=north"])


def _meander(mask: np.ndarray, start, end, rng, wobble: float, width: int) -> None:
    """A crack as a model draws one: a course that wanders about the straight line, 1 to ``width``
    px wide along it, with a short spur."""
    (r0, c0), (r1, c1) = start, end
    steps = int(math.hypot(r1 - r0, c1 - c0))
    t = np.linspace(0, 1, steps)
    normal = np.array([-(c1 - c0), r1 - r0]) / steps
    drift = ndimage.gaussian_filter1d(rng.normal(0, wobble * 6, steps), 12)
    rows = np.round(r0 + t * (r1 - r0) + drift * normal[0]).astype(int)
    cols = np.round(c0 + t * (c1 - c0) + drift * normal[1]).astype(int)
    course = np.zeros_like(mask, bool)
    for i in range(steps - 1):
        rr, cc = draw_line(rows[i], cols[i], rows[i + 1], cols[i + 1])
        course[rr, cc] = True
    middle = steps // 2
    rr, cc = draw_line(rows[middle], cols[middle], rows[middle] + 25, cols[middle] + 15)  # a spur
    course[rr, cc] = True
    wide = ndimage.binary_dilation(course, iterations=1)
    thick = np.zeros_like(course)
    thick[:, : mask.shape[1] // 2] = True  # wider in one half: widths vary along a crack
    mask[course | (wide & thick & (width > 1))] = 1


def _network(mask: np.ndarray, top: int, left: int, size: int, rng) -> None:
    """Map cracking: the edges of Voronoi cells (about 60 px across) in a square, 2 px wide."""
    seeds = rng.uniform(0, size, (int((size / 60) ** 2), 2))
    rows, cols = np.mgrid[0:size, 0:size]
    nearest = np.argmin(((rows[..., None] - seeds[:, 0]) ** 2 + (cols[..., None] - seeds[:, 1]) ** 2), axis=-1)
    edges = (np.diff(nearest, axis=0, prepend=nearest[:1]) != 0) | (
        np.diff(nearest, axis=1, prepend=nearest[:, :1]) != 0
    )
    mask[top : top + size, left : left + size][ndimage.binary_dilation(edges)] = 1


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    """A 3 m x 2 m deck span at 1 mm running east-west, with a crack of every type drawn as a model
    draws them, and the span's outline."""
    rng = np.random.default_rng(3)
    mask = np.zeros((2000, 3000), np.uint8)
    _meander(mask, (150, 300), (1250, 330), rng, 1.0, 2)  # north-south: across the span
    _meander(mask, (1700, 200), (1650, 1400), rng, 1.0, 3)  # east-west: along it
    _meander(mask, (300, 900), (1100, 1700), rng, 1.0, 1)  # at 45° (south-east)
    _network(mask, 200, 2100, 500, rng)
    _meander(mask, (1300, 2000), (1300, 2600), rng, 0.5, 2)  # an L: east, then north
    _meander(mask, (1300, 2600), (800, 2600), rng, 0.5, 2)
    tmp = tmp_path_factory.mktemp("types")
    survey = write_mask_survey(tmp / "survey", mask)
    span = gpd.GeoDataFrame({"element": ["span 1"]}, geometry=[shapely.box(X0, Y0 - 2, X0 + 3, Y0)], crs="EPSG:32633")
    span.to_file(tmp / "span.gpkg")
    return survey, tmp / "span.gpkg"


def _by_place(defects: pd.DataFrame) -> dict[str, tuple[str, float]]:
    """Type and angle of the crack nearest each drawn place (metres east, south of the corner)."""
    places = {"north-south": (0.32, 0.7), "east-west": (0.8, 1.68), "diagonal": (1.3, 0.7), "network": (2.35, 0.45)}
    places["L"] = (2.6, 1.1)
    found = {}
    for name, (east, south) in places.items():
        point = shapely.Point(X0 + east, Y0 - south)
        row = defects.loc[defects.geometry.distance(point).idxmin()]
        found[name] = (row["crack_type"], row["angle_to_axis_deg"])
    return found


def test_drawn_cracks_are_typed_against_the_span_they_lie_in(deck):
    survey, span = deck
    elements = read_elements(ElementsConfig(path=span), "EPSG:32633")
    tables = build_defects(
        survey / "mask.tif", None, ["background", "crack", "spall"], ReportConfig(), None, StructureAxes.of(elements)
    )
    defects = tables.defects
    assert len(defects) == 5 and (defects["element"] == "span 1").all()
    found = _by_place(defects)
    assert found["north-south"][0] == "transverse" and found["north-south"][1] > 80
    assert found["east-west"][0] == "longitudinal" and found["east-west"][1] < 10
    assert found["diagonal"][0] == "diagonal" and 35 < found["diagonal"][1] < 55
    assert found["network"][0] == "map"
    assert found["L"][0] == "irregular"
    # the same cracks with no axis anywhere: the straight ones are only "linear"
    plain = build_defects(survey / "mask.tif", None, ["background", "crack", "spall"], ReportConfig())
    assert sorted(plain.defects["crack_type"]) == ["irregular", "linear", "linear", "linear", "map"]
    assert (plain.defects["element"] == "").all() and plain.defects["angle_to_axis_deg"].isna().all()


def test_an_element_field_and_the_job_name_the_axis_in_msaf_report(deck, tmp_path):
    """The span's axis_deg (0: traffic runs north) wins over its outline; the job's axis types cracks
    outside every element; a mistyped axis is one line and leaves no report."""
    survey, _ = deck
    span = gpd.GeoDataFrame(
        {"element": ["span 1"], "axis_deg": [0.0]}, geometry=[shapely.box(X0, Y0 - 2, X0 + 1.5, Y0)], crs="EPSG:32633"
    )
    span.to_crs("EPSG:4326").to_file(tmp_path / "span.gpkg")
    wrong = msaf_in_process("report", str(survey), "--meta", "axis_deg=along the deck")
    assert_one_line_error(wrong, "axis_deg 'along the deck' is not a number")
    assert not (survey / "report.html").exists()
    done = run_msaf("report", str(survey), "--elements", str(tmp_path / "span.gpkg"), "--meta", "axis_deg=90")
    assert done.returncode == 0, done.stderr
    assert "cracks by type: 1 transverse, 1 longitudinal, 1 diagonal, 1 map, 1 irregular" in done.stdout
    defects = gpd.read_file(survey / "defects.gpkg", layer="defects")
    found = _by_place(defects)
    assert found["north-south"][0] == "longitudinal"  # in span 1, whose traffic runs north
    assert found["east-west"][0] == "transverse"  # mostly in span 1 (0.2-1.4 m east)
    assert found["diagonal"][0] == "diagonal"  # straddles 1.5 m: typed in the element holding most of it
    assert dict(zip(defects["crack_type"], defects["element"], strict=False))["map"] == ""
    csv = pd.read_csv(survey / "defects.csv")
    assert list(csv.columns[:4]) == ["defect_id", "class", "severity", "element"]
    assert {"crack_type", "angle_to_axis_deg"} <= set(csv.columns)
    html = (survey / "report.html").read_text()
    assert (
        "Cracks by type (axes: span 1: 0° from grid north (its field axis_deg); "
        "outside the elements: 90° from grid north (job detail axis_deg))" in html
    )
    assert 'alt="cracks by type"' in html  # the map of them, the span outlined and named


def test_every_crack_type_has_a_colour():
    from pipeline.styles import CRACK_TYPE_COLOURS

    assert list(CRACK_TYPE_COLOURS) == [t.value for t in CrackType]
    assert len(set(CRACK_TYPE_COLOURS.values())) == len(CRACK_TYPE_COLOURS)


def test_the_overview_names_the_25_worst_defects_and_the_chips_follow_their_own_count(tmp_path):
    """30 cracks: the map's labels and the table stop at the 25 most severe, the image chips at
    report.chips (here 30), not at the table's length."""
    from rasterio.transform import from_origin

    from pipeline.report.build import report_survey
    from tests.conftest import write_raster

    mask = np.zeros((600, 1200), np.uint8)
    for k in range(30):
        row, col = 40 + 90 * (k // 10), 40 + 110 * (k % 10)
        mask[row : row + 3, col : col + 60] = 1
    survey = write_mask_survey(tmp_path / "survey", mask)
    grey = np.where(mask == 1, 40, 170).astype(np.uint8)
    ortho = write_raster(tmp_path / "ortho.tif", np.stack([grey] * 3), transform=from_origin(X0, Y0, 0.001, 0.001))
    report_survey(survey, ReportConfig(chips=30), image=ortho)
    html = (survey / "report.html").read_text()
    assert html.count('class="chip"') == 30
    table = html[html.index("Most severe defects") :]
    table = table[: table.index("</table>")]
    assert table.count("<tr") == 1 + 25  # its header and the 25 worst
