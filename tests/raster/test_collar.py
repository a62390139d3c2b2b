"""The collar: the black fill a file without alpha, nodata or mask was painted with outside (and in the
holes of) its ground. Found where it is, never in a crack, the same for any block size, and what the
shipped model would otherwise call crack."""

from __future__ import annotations

import io

import numpy as np
import pyogrio
import pytest
import rasterio
from PIL import Image
from scipy import ndimage

from pipeline.config import CollarConfig, SurveyConfig
from pipeline.raster.collar import CELL, CollarFinder, CollarRule
from pipeline.raster.grid import Box
from pipeline.survey import prepare_survey, run_survey
from tests.conftest import REPO, cpu_survey, run_msaf, write_raster

RULE = CollarRule.of(CollarConfig())  # black fill within 8 levels, in 32-px squares; beside it, within 48
SHIPPED = REPO / "pipeline" / "assets" / "msaf-dsnet.safetensors"
CPU = {"device": "cpu", "gsd_policy": "ignore", "batch": 4}


def _collar(rgb: np.ndarray, rule: CollarRule = RULE) -> np.ndarray:
    return rule.collar(rule.fill_colour(rgb))


def _grey(height: int, width: int, level: int = 150, seed: int = 0) -> np.ndarray:
    """Lit concrete: a mid grey with sensor noise."""
    noise = np.random.default_rng(seed).normal(0, 6, (3, height, width))
    return np.clip(level + noise, 0, 255).astype(np.uint8)


def test_a_fill_is_collar_a_black_crack_and_a_shadow_are_not():
    rgb = _grey(200, 300)
    rgb[:, 60:140, 40:120] = 0  # a hole the photogrammetry left, painted black
    rgb[:, 20:180, 200:205] = 0  # a 5-px black crack, 160 px long
    rgb[:, 150:190, 230:290] = 25  # a deep shadow: as dark as a JPEG's smear of the fill, but not fill
    collar = _collar(rgb)
    expected = np.zeros(collar.shape, bool)
    expected[60:140, 40:120] = True
    np.testing.assert_array_equal(collar, expected)


def test_the_fill_a_jpeg_smeared_is_taken_with_it():
    """Ringing: the fill's edge is no longer black after JPEG, the smear within 32 levels goes too."""
    rgb = _grey(256, 256) + np.array([25, 0, -35], np.int16)[:, None, None].astype(np.uint8)  # concrete's tint
    fill = np.arange(256)[None, :] < 100 + np.arange(256)[:, None] // 3  # a slanting edge, through JPEG blocks
    rgb[:, fill] = 0
    buffer = io.BytesIO()
    Image.fromarray(rgb.transpose(1, 2, 0)).save(buffer, "JPEG", quality=75)  # 4:2:0: colour bleeds 16 px
    decoded = np.asarray(Image.open(buffer)).transpose(2, 0, 1).copy()
    smeared = fill & (decoded.max(axis=0) > RULE.near)
    assert smeared.sum() > 300  # the codec did smear the fill
    collar = _collar(decoded)
    assert collar[smeared].mean() > 0.95  # the smear goes with the fill (474 of its 495 pixels; 40 of the
    assert collar[fill].mean() > 0.998  # 36,395 fill pixels stay: smeared by more than 48 levels)
    assert not collar[~fill].any()  # and not a pixel of the ground
    assert not _collar(decoded, CollarRule(8, 32))[smeared].any()  # with no smear allowed, it stays


def test_the_raster_edge_counts_as_fill_and_white_is_an_option():
    rgb = _grey(120, 120)
    rgb[:, :, :10] = 0  # a 10-px black strip along the raster's edge: narrower than the square
    rgb[:, 50:90, 50:90] = 255  # clipped glare, or white fill
    collar = _collar(rgb)
    assert collar[:, :10].all() and not collar[:, 10:].any()
    white = _collar(rgb, CollarRule(8, 32, 32, white=True))
    assert white[50:90, 50:90].all() and white.sum() == 120 * 10 + 40 * 40


def test_real_photos_keep_their_cracks_and_all_but_a_black_corner(cfd_dir, uav_dir, masonry_dir):
    """Every photo of concrete and masonry the project has (328), with its labels: the black rule takes
    no labelled pixel, and of 38.7 Mpix only one photo's black 16-px corner (a masonry photo's
    vignette: fill as far as any rule can tell)."""
    taken, pixels, labelled = 0, 0, 0
    for folder in (cfd_dir, uav_dir, masonry_dir):
        for path in sorted((folder / "images").iterdir()):
            rgb = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1).copy()
            collar = _collar(rgb)
            label = np.asarray(Image.open(folder / "masks" / f"{path.stem}.png"))
            labelled += int(((label.max(axis=-1) if label.ndim == 3 else label) > 0)[collar].sum())
            taken, pixels = taken + int(collar.sum()), pixels + collar.size
    assert labelled == 0
    assert taken == 256 and pixels == 38_675_456


def _collar_by_definition(levels: np.ndarray, side: int) -> np.ndarray:
    """The cell rule written out cell by cell: fill cells (every pixel level 2; beyond the array,
    every cell) in an all-fill square of ``side`` cells are collar, and a pixel of a cell touching a
    collar cell of the array is collar unless it is level 0."""
    height, width = levels.shape
    rows, cols = -(-height // CELL), -(-width // CELL)
    whole = np.full((rows * CELL, cols * CELL), 2, np.uint8)
    whole[:height, :width] = levels
    fill = (whole == 2).reshape(rows, CELL, cols, CELL).all(axis=(1, 3))

    def fill_cell(i: int, j: int) -> bool:
        return not (0 <= i < rows and 0 <= j < cols) or bool(fill[i, j])

    def collar_cell(i: int, j: int) -> bool:
        if not (0 <= i < rows and 0 <= j < cols):
            return False
        squares = ((a, b) for a in range(i - side + 1, i + 1) for b in range(j - side + 1, j + 1))
        return any(all(fill_cell(x, y) for x in range(a, a + side) for y in range(b, b + side)) for a, b in squares)

    touching = np.array(
        [
            [any(collar_cell(i + di, j + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)) for j in range(cols)]
            for i in range(rows)
        ]
    )
    return (np.repeat(np.repeat(touching, CELL, 0), CELL, 1) & (whole > 0))[:height, :width]


@pytest.mark.parametrize("size", [16, 32, 40])
def test_the_cell_rule_is_what_it_says(size):
    """Random rectangles of fill with smear and ground speckled in, against the rule written out."""
    rule, rng = CollarRule(8, size, 32), np.random.default_rng(size)
    for _ in range(12):
        height, width = rng.integers(20, 90, 2)
        levels = np.zeros((height, width), np.uint8)
        for _ in range(rng.integers(1, 6)):
            r, c = rng.integers(0, height), rng.integers(0, width)
            levels[r : r + rng.integers(5, 60), c : c + rng.integers(5, 60)] = 2
        levels[rng.random((height, width)) < 0.03] = 1
        levels[rng.random((height, width)) < 0.01] = 0
        np.testing.assert_array_equal(rule.collar(levels), _collar_by_definition(levels, size // CELL))


def _frame_reads(monkeypatch) -> list[tuple[int, int, int, int]]:
    reads: list[tuple[int, int, int, int]] = []
    real = CollarFinder._fill_of

    def counted(self, row0, row1, col0, col1):
        reads.append((row0, row1, col0, col1))
        return real(self, row0, row1, col0, col1)

    monkeypatch.setattr(CollarFinder, "_fill_of", counted)
    return reads


def test_a_box_is_judged_with_a_frame_read_only_where_fill_comes_near_it(tmp_path, monkeypatch):
    from pipeline.config import ScalingConfig
    from pipeline.raster.source import open_source

    rgb = _grey(300, 300)
    rgb[:, :, :100] = 0  # fill on the left third
    path = write_raster(tmp_path / "left.tif", rgb)
    info = open_source(path, ScalingConfig())
    finder = CollarFinder(info, RULE)
    reads = _frame_reads(monkeypatch)
    for box, wanted in ((Box(100, 150, 200, 250), 0), (Box(100, 90, 200, 250), 3)):
        pixels = np.ascontiguousarray(rgb[:, box.row0 : box.row1, box.col0 : box.col1])
        valid = np.ones((box.height, box.width), bool)
        reads.clear()
        finder.clear(box, pixels, valid)
        assert len(reads) == wanted
    # rows, then columns, half-open: each side 40 px (the square's 4 cells and a touching one) out to the
    # 8-px lattice (100 - 40 -> 56, 90 - 40 -> 48, 250 + 40 -> 296); the right side, no fill near it, not read
    assert RULE.reach == 40
    assert reads == [(56, 100, 48, 296), (200, 240, 48, 296), (100, 200, 48, 90)]
    assert not valid[:, :10].any() and valid[:, 10:].all()  # a 10-px strip of the fill: collar with the frame
    finder.close()


def _paint_black(ortho, out, **profile) -> np.ndarray:
    """``ortho`` written to ``out`` with its footprint's outside painted black, without its mask, as
    JPEG (YCbCr) with ``profile`` on top; its true footprint."""
    with rasterio.open(ortho) as ds:
        rgb, footprint, written = ds.read(), ds.dataset_mask() > 0, ds.profile
    rgb[:, ~footprint] = 0
    written.update(compress="jpeg", photometric="YCBCR", tiled=True, blockxsize=128, blockysize=128, **profile)
    with rasterio.open(out, "w", **written) as dst:
        dst.write(rgb)
    return footprint


@pytest.fixture(scope="module")
def painted(crack_mosaic, tmp_path_factory):
    """The test mosaic as a writer without masks leaves it: no mask, no nodata; with the true footprint."""
    path = tmp_path_factory.mktemp("painted") / "painted.tif"
    return path, _paint_black(crack_mosaic[0], path)


def test_a_painted_footprint_is_found_the_same_for_any_block_size(tmp_path, tiny_model, painted):
    path, footprint = painted
    masks = {}
    for block in (96, 200, 4096):
        record = run_survey(path, tmp_path / str(block), SurveyConfig(**CPU, block=block), model_path=tiny_model)
        with rasterio.open(tmp_path / str(block) / "mask.tif") as ds:
            masks[block] = ds.read(1)
    for block in (96, 200):
        np.testing.assert_array_equal(masks[block], masks[4096], err_msg=str(block))
    surveyed = masks[4096] != 255
    assert (surveyed != footprint).mean() < 0.002  # the true footprint, to a few concave corners
    inside = ndimage.binary_erosion(footprint, iterations=12)
    assert surveyed[inside].all()  # the mapped ground's own pixels are all surveyed
    assert record.input.footprint == "none"
    assert record.collar is not None and record.collar.model_dump() == {
        "near": 8,
        "size": 32,
        "smear": 48,
        "white": False,
    }
    assert record.footprint.startswith("none declared: black fill taken as nodata")
    off = run_survey(
        path, tmp_path / "off", SurveyConfig(**CPU, collar=CollarConfig(mode="off")), model_path=tiny_model
    )
    with rasterio.open(tmp_path / "off" / "mask.tif") as ds:
        assert (ds.read(1) != 255).all()  # off: every pixel is ground, as before
    assert off.collar is None and off.footprint == "none declared: every pixel was surveyed"
    keys = {
        mode: prepare_survey(
            path, tmp_path / "k", SurveyConfig(**CPU, collar=CollarConfig(mode=mode)), model_path=tiny_model
        ).key
        for mode in ("auto", "off")
    }
    assert keys["auto"] != keys["off"]  # a resume never mixes blocks found with and without the collar
    from pipeline.config import ReportConfig
    from pipeline.report.build import report_survey

    report_survey(tmp_path / "4096", ReportConfig())  # the fill is not surveyed ground, and the page says why
    states = pyogrio.read_dataframe(tmp_path / "4096" / "defects.gpkg", layer="condition_states")
    ground_m2 = footprint.sum() * 1e-6 / 0.9997**2  # 1 mm pixels, UTM 33N's scale at 15.0 E
    assert states["area_m2"].sum() == pytest.approx(ground_m2, rel=2e-3)
    assert (
        "<dt>footprint</dt><dd>none declared: black fill taken as nodata (32 px"
        in (tmp_path / "4096" / "report.html").read_text()
    )


def test_a_file_with_its_own_footprint_keeps_it_unless_asked(tmp_path, tiny_model, crack_mosaic):
    """auto leaves a declared footprint alone (the same key and mask as before); on takes the black
    a nodata value's JPEG smeared beside it too."""
    ortho, _ = crack_mosaic
    cfg = SurveyConfig(**CPU)
    record = run_survey(ortho, tmp_path / "auto", cfg, model_path=tiny_model)
    assert record.input.footprint == "mask" and record.collar is None and record.footprint == "the file's mask"
    footprint = _paint_black(ortho, tmp_path / "nodata.tif", nodata=0)
    surveyed = {}
    for mode in ("auto", "on"):
        record = run_survey(
            tmp_path / "nodata.tif",
            tmp_path / mode,
            SurveyConfig(**CPU, collar=CollarConfig(mode=mode)),
            model_path=tiny_model,
        )
        assert record.input.footprint == "nodata"
        with rasterio.open(tmp_path / mode / "mask.tif") as ds:
            surveyed[mode] = ds.read(1) != 255
    assert (surveyed["auto"] & ~footprint).sum() > 500  # the smear is not exactly the nodata value
    assert (surveyed["on"] & ~footprint).sum() < 0.2 * (surveyed["auto"] & ~footprint).sum()
    assert record.footprint.startswith("the file's nodata value, and black fill taken as nodata")


def test_the_shipped_model_calls_the_fill_crack_and_the_collar_stops_it(tmp_path, crack_mosaic, painted):
    """With the model the product ships: black fill is crack to it (collar off); `msaf survey`, as a
    user runs it, takes the fill as nodata, says so, and answers on the ground as the file with its
    mask does (the fill darkened the tiles beside it: with it, half the cracks within them went)."""
    path, footprint = painted
    run_survey(crack_mosaic[0], tmp_path / "masked", SurveyConfig(**CPU), model_path=SHIPPED)
    run_survey(path, tmp_path / "off", SurveyConfig(**CPU, collar=CollarConfig(mode="off")), model_path=SHIPPED)
    result = run_msaf(*cpu_survey(path, tmp_path / "auto", SHIPPED, "--no-track", "--no-report", "--batch", "4"))
    assert result.returncode == 0, result.stderr
    assert "footprint: none declared: black fill taken as nodata (32 px across or more" in result.stdout
    crack = {}
    for name in ("masked", "off", "auto"):
        with rasterio.open(tmp_path / name / "mask.tif") as ds:
            crack[name] = ds.read(1) == 1
    outside = ~ndimage.binary_dilation(footprint, iterations=8)
    assert crack["off"][outside].mean() > 0.9  # the fill, nearly all of it "crack"
    assert crack["auto"][outside].sum() == 0
    agree = {name: (crack[name] == crack["masked"])[footprint].mean() for name in ("off", "auto")}
    assert agree["auto"] > 0.99 and agree["auto"] - agree["off"] > 0.005, agree  # measured 0.995 and 0.984


@pytest.mark.parametrize("pixel_m", [0.001, 0.004])
def test_registration_reads_a_painted_footprint_as_the_masked_one(crack_mosaic, painted, pixel_m):
    """The orthomosaic as change reports read it (registration, visibility): the painted file's valid
    ground is the masked file's, at its own pixel and decimated 4x; the fill's edge cannot pull."""
    import pyproj

    from pipeline.raster.ground_image import GroundGrid, GroundImage

    crs = pyproj.CRS("EPSG:32633")
    with rasterio.open(crack_mosaic[0]) as ds:
        grid = GroundGrid.covering(tuple(ds.bounds), pixel_m)
    _, masked = GroundImage(crack_mosaic[0], crs).read(grid)
    _, found = GroundImage(painted[0], crs).read(grid)
    assert 0.1 < 1 - masked.mean() < 0.9  # the footprint leaves real nodata to find
    assert (~found & masked).sum() <= 1  # the masked file's ground is kept (a dark pixel by the edge went)
    assert (found == masked).mean() > 0.98  # measured 0.9992 and 0.9879: averaging blurs the fill's edge
