"""Epoch registration: two flights of one wall, the second off by a known offset and flown in other
light (gamma, gain, blur, sensor noise, JPEG), found again to a fraction of a pixel; another wall and
an offset beyond the limit are refused with the reason; `msaf compare` matches cracks only after it."""

import io
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from PIL import Image, ImageFilter
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject
from scipy.ndimage import map_coordinates
from scipy.ndimage import shift as shift_image

from pipeline.config import RegistrationConfig, ReportConfig
from pipeline.report.registration import register_epochs
from tests.conftest import UAV75, assert_one_line_error, msaf_in_process, run_msaf, write_mask_survey, write_raster
from tests.report.test_change_tracking import _old_epoch

ORIGIN = (400000.0, 5000000.0)  # write_mask_survey's grid: EPSG:32633, 1 mm pixels
UTM = pyproj.CRS("EPSG:32633")


def _wall(first: int, rows: int = 3, cols: int = 4) -> np.ndarray:
    """A concrete wall of rows x cols real drone photos (UAV75), (H, W, 3)."""
    photos = sorted((UAV75 / "images").glob("*.jpg"))[first : first + rows * cols]
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
    return np.concatenate([np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(rows)])


def _relit(rgb: np.ndarray, seed: int = 0) -> np.ndarray:
    """What another flight's camera makes of the same ground: other light (gamma 1.3, gain 0.8,
    +20), blur (sigma 0.8 px), sensor noise (sigma 3) and JPEG (quality 70)."""
    lit = 255 * (np.clip(rgb, 0, 255) / 255) ** 1.3 * 0.8 + 20
    blurred = Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    noisy = np.asarray(blurred).astype(float) + np.random.default_rng(seed).normal(0, 3, lit.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=70)
    return np.asarray(Image.open(buffer))


def _reflown(rgb: np.ndarray, east_px: float, north_px: float) -> np.ndarray:
    """The same ground from another flight, every feature ``east_px``/``north_px`` away (sub-pixel, cubic)."""
    moved = np.stack(
        [shift_image(rgb[..., b].astype(float), (-north_px, east_px), order=3, mode="nearest") for b in range(3)], -1
    )
    return _relit(moved)


def _ortho(path: Path, rgb: np.ndarray, origin=ORIGIN, crs: str = "EPSG:32633", res: float = 0.001) -> Path:
    return write_raster(
        path, rgb.transpose(2, 0, 1), crs=crs, transform=from_origin(*origin, res, res), photometric="RGB"
    )


def _bounds(path: Path) -> shapely.Polygon:
    with rasterio.open(path) as ds:
        return shapely.box(*ds.bounds)


@pytest.fixture(scope="module")
def wall(tmp_path_factory) -> Path:
    return _ortho(tmp_path_factory.mktemp("wall") / "old.tif", _wall(0))


def _to_web_mercator(path: Path) -> Path:
    out_path = path.with_name("mercator.tif")
    with rasterio.open(path) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height, *src.bounds)
        out = np.zeros((3, height, width), np.uint8)
        reproject(
            src.read(),
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs="EPSG:3857",
            resampling=Resampling.bilinear,
        )
    return write_raster(out_path, out, crs="EPSG:3857", transform=transform)


@pytest.mark.parametrize(
    ("east_px", "north_px", "georeferenced_off_m", "web_mercator"),
    [
        (63.4, -27.8, (0.0, 0.0), False),  # 69 mm: GNSS with ground control
        (0.3, 0.6, (0.4, -0.25), False),  # 0.47 m: a flight without ground control
        (63.4, -27.8, (0.0, 0.0), True),  # the second flight delivered in another CRS
    ],
)
def test_a_reflown_wall_is_registered_to_a_fifth_of_a_pixel(
    tmp_path, wall, east_px, north_px, georeferenced_off_m, web_mercator
):
    origin = (ORIGIN[0] + georeferenced_off_m[0], ORIGIN[1] + georeferenced_off_m[1])
    new = _ortho(tmp_path / "new.tif", _reflown(_wall(0), east_px, north_px), origin)
    if web_mercator:
        new = _to_web_mercator(new)
    found = register_epochs(wall, new, UTM, _bounds(wall), RegistrationConfig())
    assert found.applied, found.note
    assert found.method == "orthomosaics" and found.agreeing >= 3
    # every feature lies (east_px mm + offset) east of where it was: the new survey moves back by that
    assert found.east_m == pytest.approx(-(east_px / 1000 + georeferenced_off_m[0]), abs=2e-4)
    assert found.north_m == pytest.approx(-(north_px / 1000 + georeferenced_off_m[1]), abs=2e-4)
    assert found.spread_m < 3e-4


def test_a_turned_and_scaled_epoch_is_registered_everywhere_on_the_wall(tmp_path, wall):
    """Two orthomosaics processed apart differ by a little turn and scale as well as a shift: here
    0.6° and +2000 ppm about the wall's centre and 30 mm east (up to 15 mm apart at the corners, beyond
    a 10 mm match tolerance). The fitted transform puts every corner within 0.3 mm of where it belongs."""
    rgb = _wall(0)
    height, width = rgb.shape[:2]
    res, (x0, y0) = 0.001, ORIGIN
    centre = np.array([x0 + width * res / 2, y0 - height * res / 2])
    angle, scale, shift = np.radians(0.6), 1.002, np.array([0.030, 0.0])
    turn = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def to_old(points: np.ndarray) -> np.ndarray:  # a point of the new survey -> the same ground in the old one
        return (points - centre) @ turn.T + centre + shift

    rows, cols = np.mgrid[0:height, 0:width]
    seen = to_old(np.column_stack([x0 + (cols.ravel() + 0.5) * res, y0 - (rows.ravel() + 0.5) * res]))
    source = [(y0 - seen[:, 1]) / res - 0.5, (seen[:, 0] - x0) / res - 0.5]
    turned = np.stack(
        [
            map_coordinates(rgb[..., b].astype(float), source, order=3, mode="nearest").reshape(height, width)
            for b in range(3)
        ],
        -1,
    )
    new = _ortho(tmp_path / "turned.tif", _relit(turned))
    found = register_epochs(wall, new, UTM, _bounds(wall), RegistrationConfig())
    assert found.applied, found.note
    assert found.rotation_deg == pytest.approx(0.6, abs=0.01) and found.scale == pytest.approx(1.002, abs=1e-4)
    corners = np.array(
        [[x0, y0], [x0 + width * res, y0], [x0, y0 - height * res], [x0 + width * res, y0 - height * res]]
    )
    fitted = np.column_stack(found.transform @ (corners[:, 0], corners[:, 1]))
    assert np.abs(fitted - to_old(corners)).max() < 3e-4
    assert np.abs(to_old(corners) - corners).max() > 0.010  # a shift alone would not do
    assert "turned +0.60" in found.summary() and "scaled +20" in found.summary()


@pytest.mark.parametrize(
    ("name", "shift_px", "max_shift_m"),
    [("webodm_orthophoto.tif", (1.3, 0.6), 2.0), ("deepforest_OSBS_029.tif", (2.7, -1.4), 1.0)],
)
def test_real_orthophotos_are_registered_to_a_fifth_of_a_pixel(tmp_path, name, shift_px, max_shift_m):
    """The project's two real orthophotos (alpha footprint / nodata 255, 0.5 m / 0.1 m, UTM 15 / 17),
    the second epoch made from each as above."""
    source = Path(__file__).parents[2] / "data" / "sources" / "ortho" / name
    with rasterio.open(source) as src:
        data, profile, res = src.read(), src.profile, src.res
    moved = _reflown(data[:3].transpose(1, 2, 0), *shift_px).transpose(2, 0, 1)
    epoch = np.concatenate([moved, data[3:]]) if len(data) == 4 else np.where(data == 255, 255, moved)
    with rasterio.open(tmp_path / name, "w", **profile) as dst:
        dst.write(epoch)
    found = register_epochs(
        source,
        tmp_path / name,
        pyproj.CRS(profile["crs"]),
        _bounds(source),
        RegistrationConfig(max_shift_m=max_shift_m),
    )
    assert found.applied, found.note
    assert found.east_m == pytest.approx(-shift_px[0] * res[0], abs=0.2 * res[0])
    assert found.north_m == pytest.approx(-shift_px[1] * res[1], abs=0.2 * res[1])


def test_another_wall_is_not_registered_and_the_report_says_why(tmp_path, wall):
    other = _ortho(tmp_path / "other.tif", _wall(12))
    found = register_epochs(wall, other, UTM, _bounds(wall), RegistrationConfig(max_shift_m=5.0))
    assert not found.applied and found.method == "none"
    assert "agree on a shift" in found.note and found.agreeing < 3


def test_an_offset_beyond_the_limit_is_refused(tmp_path, wall):
    far = _ortho(tmp_path / "far.tif", _reflown(_wall(0), 0, 0), (ORIGIN[0] + 0.4, ORIGIN[1] - 0.25))
    found = register_epochs(wall, far, UTM, _bounds(wall), RegistrationConfig(max_shift_m=0.3))
    assert not found.applied and found.east_m == 0.0
    assert "m away, beyond report.registration.max_shift_m (0.3 m)" in found.note
    assert float(found.note.split(" m away")[0].split()[-1]) == pytest.approx(0.472, abs=0.005)  # the coarse match
    off = register_epochs(wall, far, UTM, _bounds(wall), RegistrationConfig(mode="off"))
    assert not off.applied and off.method == "off"


@pytest.mark.slow  # three `msaf compare` processes
def test_compare_registers_the_epochs_before_it_matches_cracks(tmp_path):
    """The one-of-each epochs (tests/report/test_change_tracking.py), the second flight 43 mm off
    (37 mm east, 21 mm north) with its orthomosaic: registered, each change is found as on a perfect
    grid; compared as they lie (--registration off), every crack is new and not found."""
    old_mask = _old_epoch()
    new_mask = old_mask.copy()
    new_mask[50:53, 220:320] = 1  # A extended
    new_mask[148:155, 20:220] = 1  # B widened
    new_mask[300:303, :] = 0  # R repaired
    new_mask[90:93, 100:450] = 1  # N new
    new_mask = np.roll(new_mask, (-21, 37), axis=(0, 1))  # the second flight's ground, 21 mm north, 37 east
    write_mask_survey(tmp_path / "old", old_mask)
    write_mask_survey(tmp_path / "new", new_mask)
    height, width = old_mask.shape
    old_image = _ortho(tmp_path / "old.tif", _wall(0)[:height, :width])
    new_image = _ortho(tmp_path / "new.tif", _reflown(_wall(0), 37, 21)[:height, :width])
    params = tmp_path / "params.yaml"
    params.write_text("report:\n  min_area_m2: 0\n  match_distance_m: 0.01\n")
    common = ["compare", str(tmp_path / "old"), str(tmp_path / "new"), "--params", str(params)]
    images = ["--old-image", str(old_image), "--new-image", str(new_image)]

    registered = run_msaf(*common, "--out", str(tmp_path / "registered"), *images, "--pdf", "--paper", "letter")
    assert registered.returncode == 0, registered.stderr
    assert (tmp_path / "registered" / "report.pdf").read_bytes().startswith(b"%PDF")  # filed as the survey's is
    assert "registration: new survey moved -37.0 mm east, -21." in registered.stdout
    assert (
        "1 new, 0 missed before (visible then), 1 extended, 1 widened, 0 grown, 2 unchanged, 0 shrunk, "
        "1 not found (repaired?), 0 not detected (still visible)" in registered.stdout
    )  # the wall photos show no line where the masks' cracks are: new and not found stand
    assert "per crack: 1 new, 1 extended, 1 widened, 1 unchanged" in registered.stdout  # each crack one piece
    row = gpd.read_file(tmp_path / "registered" / "changes.gpkg", layer="registration").iloc[0]
    assert bool(row["applied"]) and row["shift_east_m"] == pytest.approx(-0.037, abs=2e-4)
    assert row["shift_north_m"] == pytest.approx(-0.021, abs=2e-4) and row["agreeing"] >= 3
    html = (tmp_path / "registered" / "report.html").read_text()
    assert "new survey moved -37.0 mm east" in html and "compared as they lie" not in html
    # both orthomosaics given, but the reports read their widths from the masks: the same band (the
    # default) needs image widths on both sides, so each report's own widths are compared, as it says
    band = gpd.read_file(tmp_path / "registered" / "changes.gpkg", layer="width_comparison")["band"]
    assert band.tolist() == ["each survey's own"]

    as_they_lie = run_msaf(*common, "--out", str(tmp_path / "as_they_lie"), *images, "--registration", "off")
    assert as_they_lie.returncode == 0, as_they_lie.stderr
    assert "registration: not registered: report.registration.mode is off" in as_they_lie.stdout
    changes = gpd.read_file(tmp_path / "as_they_lie" / "changes.gpkg", layer="changes")
    cracks = changes[changes["class"] == "crack"]
    assert "unchanged" not in set(cracks["status"]) and (cracks["status"] == "new").sum() >= 4

    from pipeline.report.compare import compare_surveys

    cfg = ReportConfig(min_area_m2=0, match_distance_m=0.01)
    without_images = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "without_images", cfg)
    # the masks' few straight lines do not agree on a shift in enough windows: compared as they lie
    assert without_images.registration.note.endswith(
        "on the defect masks, as the old and new survey's orthomosaic is not in place (pass --old-image / --new-image)"
    )
    assert "compared as they lie, not registered" in (tmp_path / "without_images" / "report.html").read_text()

    assert_one_line_error(
        msaf_in_process(*common, "--out", str(tmp_path / "x"), "--registration", "sideways"),
        "--registration must be auto or off",
    )


def test_the_registration_bench_runs_and_finds_its_offset(tmp_path):
    """bench/registration_speed.py on a 2048² pair: it cannot rot, and its epochs register."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "speed.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "registration_speed.py"), "--sizes", "2048", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["size"] == 2048 and row["applied"] and row["agreeing"] >= 3 and row["error_mm"] < 0.3
    assert row["ratio"] == pytest.approx(row["registration_s"] / row["full_read_s"], rel=0.05)


def test_the_change_report_warns_when_the_windows_leave_a_residual_near_the_tolerance():
    """On a coarse orthomosaic the windows may agree within 1.5 px and still lie centimetres from the
    fitted transform: the reader is told, as when the epochs could not be registered at all."""
    from pipeline.report.change_page import registration_notes
    from pipeline.report.registration import Registration

    cfg = ReportConfig(match_distance_m=0.02)
    warped = Registration(applied=True, method="orthomosaics", windows=9, agreeing=9, spread_m=0.012)
    ((level, text),) = registration_notes(warped, cfg)
    assert level == "warning" and "12 mm (RMS) from the fitted shift" in text and "20 mm tolerance" in text
    assert registration_notes(Registration(applied=True, method="orthomosaics", spread_m=0.009), cfg) == []
    assert registration_notes(Registration(), cfg) == []  # off: said in the provenance only
    ((level, text),) = registration_notes(Registration(method="none", note="no common ground to match"), cfg)
    assert level == "warning" and "compared as they lie, not registered: no common ground to match" in text


def test_without_orthomosaics_the_epochs_are_registered_on_their_defect_masks(tmp_path, crack_mosaic):
    """Orthomosaics are archived apart from the surveys: the cracks both masks hold register them
    (here the crack mosaic's truth as both epochs' masks, the second georeferenced 37 mm east and
    21 mm south), and masks of other ground are refused with the reason."""
    import json

    from affine import Affine

    from pipeline.report.compare import compare_surveys

    _, truth = crack_mosaic
    with rasterio.open(truth) as src:
        cracks, transform, crs = src.read(1), src.transform, src.crs
    tags = {"MSAF_CLASSES": json.dumps(["background", "crack", "joint"])}
    for name, data, (east, north) in (
        ("old", cracks, (0.0, 0.0)),
        ("new", cracks, (0.037, -0.021)),
        ("other", cracks[::-1, ::-1].copy(), (0.0, 0.0)),
    ):
        (tmp_path / name).mkdir()
        moved = Affine.translation(east, north) @ transform
        write_raster(tmp_path / name / "mask.tif", data[None], crs=crs, transform=moved, nodata=255, tags=tags)
    cfg = ReportConfig(min_area_m2=0, match_distance_m=0.01)
    result = compare_surveys(tmp_path / "old", tmp_path / "new", tmp_path / "changes", cfg)
    found = result.registration
    assert found.applied and found.method == "masks", found.note
    assert found.east_m == pytest.approx(-0.037, abs=3e-4) and found.north_m == pytest.approx(0.021, abs=3e-4)
    assert "defect-mask windows agree" in found.summary()
    assert {status for status, n in result.changes.items() if n} == {"unchanged"}  # the same cracks
    other = compare_surveys(tmp_path / "old", tmp_path / "other", tmp_path / "other-changes", cfg).registration
    assert (
        not other.applied
        and "on the defect masks, as the old and new survey's orthomosaic is not in place" in other.note
    )
