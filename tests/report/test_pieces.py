"""A crack network larger than the measuring square: measured in pieces, reported as one crack, in
memory that does not grow with it."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
import shapely
from scipy import ndimage

from pipeline.config import ReportConfig
from pipeline.report.defects import build_defects
from pipeline.report.measure import pixel_bounds
from pipeline.report.pieces import cut_large
from pipeline.report.vectorize import vectorize
from pipeline.report.width import _chunk_medians, grouped_median
from tests.conftest import REPO, write_raster

CLASSES = ["background", "crack", "spall"]


def map_cracking(side: int, spacing: int = 100) -> np.ndarray:
    """Cracks 3 px wide every ``spacing`` px both ways: one 8-connected network across the mask."""
    mask = np.zeros((side, side), np.uint8)
    for k in range(spacing // 2, side, spacing):
        mask[k : k + 3, :] = 1
        mask[:, k : k + 3] = 1
    return mask


def photographed(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """The network as a camera sees it: dark cracks on grey concrete, lens blur, texture and noise,
    JPEG-compressed (the caller writes it with JPEG tiles)."""
    rng = np.random.default_rng(seed)
    grey = np.where(mask > 0, 55.0, 165.0) + rng.normal(0, 6, mask.shape)
    grey = ndimage.gaussian_filter(grey, 1.0) + rng.normal(0, 2, mask.shape)
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[None], 3, axis=0)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    root = tmp_path_factory.mktemp("network")
    mask = map_cracking(600)
    mask[70:90, 70:140] = 2  # a spall between the cracks: never cut
    tags = {"MSAF_CLASSES": json.dumps(CLASSES)}
    mask_path = write_raster(root / "mask.tif", mask[None], nodata=255, tags=tags)
    image_path = write_raster(
        root / "ortho.tif", photographed(mask), tiled=True, blockxsize=256, blockysize=256, compress="jpeg"
    )
    return mask_path, image_path


def test_a_network_is_cut_on_the_grid_into_pieces_that_partition_it(network):
    mask_path, _ = network
    with rasterio.open(mask_path) as mask:
        components = vectorize(mask, [1, 2])
        pieces = cut_large(components, mask.transform, 256, classes={1})
        transform = mask.transform
    (whole,) = [c for c in components if c.class_id == 1]
    cut = [c for c in pieces if c.class_id == 1]
    assert len(cut) == 9 and {c.piece_of for c in cut} == {1}  # 600 px: squares at 0, 256, 512 each way
    assert sum(c.pixels for c in cut) == whole.pixels
    assert shapely.union_all([c.geometry for c in cut]).symmetric_difference(whole.geometry).area == 0
    for piece in cut:
        col0, row0, col1, row1 = pixel_bounds(piece.geometry, transform)
        assert col0 // 256 == (col1 - 1) // 256 and row0 // 256 == (row1 - 1) // 256  # inside one square
    assert [c for c in pieces if c.class_id == 2] == [c for c in components if c.class_id == 2]  # untouched
    assert cut_large(components, transform, 600, classes={1}) == components  # no larger than the square


def test_the_pieces_are_one_crack_measured_as_the_whole_is(network):
    mask_path, image_path = network
    whole = build_defects(mask_path, None, CLASSES, ReportConfig(link_gap_m=0), image_path).defects
    cut = build_defects(mask_path, None, CLASSES, ReportConfig(link_gap_m=0, max_piece_px=256), image_path).defects
    whole_crack, pieces = whole[whole["class"] == "crack"], cut[cut["class"] == "crack"]
    assert len(whole_crack) == 1 and len(pieces) == 9
    assert pieces["crack_id"].nunique() == 1 and set(pieces["crack_type"]) == {"map"}  # one crack, typed whole
    assert pieces["pixels"].sum() == whole_crack["pixels"].sum()
    true_length_m = 2 * 6 * 600 * 0.001  # six lines each way, 600 px at 1 mm
    assert whole_crack["length_m"].sum() == pytest.approx(true_length_m, rel=0.01)
    assert pieces["length_m"].sum() == pytest.approx(whole_crack["length_m"].sum(), rel=0.005)
    weighted = (pieces["mean_width_mm"] * pieces["length_m"]).sum() / pieces["length_m"].sum()
    assert weighted == pytest.approx(float(whole_crack["mean_width_mm"].iloc[0]), abs=0.1)  # the image's width
    assert weighted == pytest.approx(3.0, abs=0.5)
    # each piece reads the width the whole does: no piece takes in its neighbour's halo across a cut
    # (before: chunks at the cuts 4 % wider), and no background level is stuck on a whole grey level
    # (before: up to 0.046 mm off the whole's mean width, and max widths 0.076 mm wider on average)
    assert (pieces["mean_width_mm"] - whole_crack["mean_width_mm"].iloc[0]).abs().max() < 0.03
    assert pieces["max_width_mm"].mean() == pytest.approx(whole_crack["max_width_mm"].iloc[0], abs=0.03)
    assert (cut["class"] == "spall").sum() == 1


def test_a_corner_clipped_by_a_square_reads_its_networks_width(tmp_path):
    """A branch that pokes 4 px across a cut into an empty square is a piece of its own: a few pixels
    of crack and the blurred halo of its tip, which on their own read ~1.7x too wide. It takes the
    length-weighted width of its network's other pieces, and so does its centreline."""
    mask = np.zeros((400, 700), np.uint8)
    mask[100:103, 20:680] = 1  # a crack across three squares
    mask[30:260, 300:303] = 1  # a branch down from it, 4 px past the cut at row 256
    tags = {"MSAF_CLASSES": json.dumps(CLASSES)}
    mask_path = write_raster(tmp_path / "mask.tif", mask[None], nodata=255, tags=tags)
    image_path = write_raster(tmp_path / "ortho.tif", photographed(mask))
    cfg = ReportConfig(link_gap_m=0, max_piece_px=256)
    tables = build_defects(mask_path, None, CLASSES, cfg, image_path)
    pieces = tables.defects
    assert len(pieces) == 4 and pieces["crack_id"].nunique() == 1
    stub = pieces.loc[pieces["pixels"].idxmin()]
    assert stub["pixels"] == 12  # 3 x 4 px
    others = pieces[pieces["defect_id"] != stub["defect_id"]]
    network = np.average(others["mean_width_mm"], weights=others["length_m"])
    assert stub["mean_width_mm"] == pytest.approx(network, abs=1e-6)
    assert stub["max_width_mm"] == pytest.approx(network, abs=1e-6)
    stub_lines = tables.centerlines[tables.centerlines["defect_id"] == stub["defect_id"]]
    assert len(stub_lines) and np.allclose(stub_lines["width_mm"], network, atol=1e-6)
    whole = build_defects(mask_path, None, CLASSES, ReportConfig(link_gap_m=0), image_path).defects
    assert network == pytest.approx(float(whole["mean_width_mm"].iloc[0]), abs=0.05)


def test_a_background_level_is_not_stuck_on_whole_grey_levels():
    """The median interpolated within its grey level's run: between two levels where the pixels are,
    unmoved by a dark tail, and a plain median where no level repeats."""
    assert grouped_median(np.array([164] * 50 + [165] * 50, np.uint8)) == 164.5
    tailed = np.array([164] * 52 + [165] * 48 + [20] * 10, float)
    assert grouped_median(tailed) == pytest.approx(163.5 + (55 - 10) / 52)  # 45 of the 52 at 164 below the middle
    rng = np.random.default_rng(0)
    assert grouped_median(rng.normal(140.3, 6, 20000).round()) == pytest.approx(140.3, abs=0.05)
    assert grouped_median(np.array([1.0, 2.5, 3.0])) == 2.5 and grouped_median(np.array([1.0, 2.0, 3.0, 4.0])) == 2.5


def test_per_chunk_backgrounds_are_the_medians_a_search_per_chunk_finds():
    rng = np.random.default_rng(2)
    chunk_ids = rng.integers(0, 40, 5000)
    levels = rng.normal(150, 20, 5000)
    naive = np.full(45, 99.0)
    for chunk in range(45):
        local = levels[chunk_ids == chunk]
        if local.size >= 8:
            naive[chunk] = np.median(local)
    assert _chunk_medians(chunk_ids, levels, 45, 99.0).tolist() == naive.tolist()


def test_measuring_memory_does_not_grow_with_the_network(tmp_path):
    """The same map cracking on a 1024² and a 3072² mask (9x the network), measured in 512-px
    pieces, each in a fresh process: the report's peak memory differs by far less than one
    whole-network window would take (measured: +350 MB without pieces)."""
    script = textwrap.dedent(
        """
        import json, resource, sys
        from pathlib import Path
        from pipeline.config import ReportConfig
        from pipeline.report.defects import build_defects
        root = Path(sys.argv[1])
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cfg = ReportConfig(workers=1, max_piece_px=512)
        classes = ["background", "crack", "spall"]
        cracks = build_defects(root / "mask.tif", None, classes, cfg, root / "ortho.tif").defects
        print(json.dumps({"start": start, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                          "cracks": int(cracks["crack_id"].nunique()), "pieces": len(cracks)}))
        """
    )
    grown = {}
    for side in (1024, 3072):
        root = tmp_path / str(side)
        root.mkdir()
        mask = map_cracking(side)
        tags = {"MSAF_CLASSES": json.dumps(CLASSES)}
        write_raster(root / "mask.tif", mask[None], nodata=255, tags=tags, tiled=True, compress="deflate")
        write_raster(root / "ortho.tif", photographed(mask), tiled=True, compress="deflate")
        done = subprocess.run(
            [sys.executable, "-c", script, str(root)], capture_output=True, text=True, timeout=300, cwd=REPO
        )
        assert done.returncode == 0, done.stderr[-2000:]
        grown[side] = json.loads(done.stdout.splitlines()[-1])
    assert grown[1024]["cracks"] == grown[3072]["cracks"] == 1
    assert (grown[1024]["pieces"], grown[3072]["pieces"]) == (4, 36)
    measuring = {side: (record["peak"] - record["start"]) / 1024 for side, record in grown.items()}  # KiB -> MiB
    assert measuring[3072] - measuring[1024] < 120, measuring


def test_two_flights_of_a_cut_network_compare_as_one_crack(tmp_path):
    """A crack added across the network between two flights: the pieces it crosses are extended,
    the others unchanged, and the network, one crack in each report, is one extended crack."""
    from pipeline.report.build import report_survey
    from pipeline.report.compare import compare_surveys
    from tests.conftest import write_mask_survey

    before = map_cracking(600)
    after = before.copy()
    after[300:303, :] = 1  # between two of the network's rows, across the middle row of squares
    old = write_mask_survey(tmp_path / "old", before, classes=("background", "crack"))
    new = write_mask_survey(tmp_path / "new", after, shift_px=1, classes=("background", "crack"))
    cfg = ReportConfig(max_piece_px=256, registration={"mode": "off"})
    assert [report_survey(folder, cfg).by_class for folder in (old, new)] == [{"crack": 9}, {"crack": 9}]
    changes = compare_surveys(old, new, tmp_path / "changes", cfg)
    assert {status: n for status, n in changes.changes.items() if n} == {"extended": 3, "unchanged": 6}
    assert changes.cracks == {"extended": 1}
