"""The accuracy benches that need a data manifest run on a tiny one, so they cannot rot: the change
stability of two flights of unchanged ground, the exposure and blur robustness, the crack types; the
compare and report speed benches and the collar's cost at tiny sizes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.manifest import build_manifest, save_manifest
from tests.conftest import REPO, write_two_set_params


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory, cfd_dir, uav_dir):
    root = tmp_path_factory.mktemp("manifest")
    path = root / "manifest.json"
    save_manifest(build_manifest(write_two_set_params(root, cfd_dir, uav_dir).data), path)
    return path


def _run_bench(name: str, *args: str) -> None:
    """``python bench/NAME ARGS`` from the project's root, as the README runs it: it succeeds."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / name), *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _sets_of(name: str, out: Path, model: Path, manifest: Path, *extra: str) -> dict:
    """The bench run on the tiny manifest's 384² mosaics: it succeeds and reports both sets."""
    _run_bench(name, "--model", str(model), "--manifest", str(manifest), "--size", "384", "--out", str(out), *extra)
    sets = json.loads(out.read_text())["sets"]
    assert set(sets) == {"cfd", "uav"}
    return sets


def test_the_change_stability_bench_registers_each_set_and_counts_every_status(tmp_path, tiny_model, tiny_manifest):
    sets = _sets_of("change_stability.py", tmp_path / "stability.json", tiny_model, tiny_manifest)
    for result in sets.values():
        shift = result["registration"]
        assert shift["applied"], shift["note"]
        assert shift["shift_east_m"] == pytest.approx(-0.0834, abs=5e-4)
        assert shift["shift_north_m"] == pytest.approx(0.0413, abs=5e-4)
        assert {"count_unchanged", "count_not detected (still visible)", "count_not seen (too dark or blurred)"} <= set(
            result["registered"]
        )
        assert result["as_they_lie"]["count_unchanged"] <= result["registered"]["count_unchanged"]
        crack_rows = sum(result["registered"]["per_crack"].values())  # one row per crack of the second survey
        assert 0 < crack_rows <= sum(n for k, n in result["registered"].items() if k.startswith("count_"))
        # what an unchanged crack could have widened unseen: at least change_tolerance (10 %) of a width
        assert 0 < result["registered"]["detectable_widening_mm"] < 10


def test_the_exposure_bench_darkens_and_scores_each_set(tmp_path, tiny_model, tiny_manifest):
    sets = _sets_of(
        "exposure_robustness.py", tmp_path / "exposure.json", tiny_model, tiny_manifest, "--gains", "0.1", "1.0"
    )
    for rows in sets.values():
        assert rows["0.1"]["mean_luminance"] < 0.2 * rows["1.0"]["mean_luminance"]
        assert all(0.0 <= row["tol_f1"] <= 1.0 or row["tol_f1"] != row["tol_f1"] for row in rows.values())


def test_the_blur_bench_defocuses_scores_and_reads_each_set(tmp_path, tiny_model, tiny_manifest):
    """The blur read rises with the blur added (the sharpness check sees what the survey was given)."""
    sets = _sets_of("blur_robustness.py", tmp_path / "blur.json", tiny_model, tiny_manifest, "--sigmas", "0", "3")
    for rows in sets.values():
        assert rows["3.0"]["blur_read_px"] > max(rows["0.0"]["blur_read_px"] + 1.0, 2.0)  # over the limit
        assert rows["3.0"]["too_blurred_share"] > rows["0.0"]["too_blurred_share"]
        assert all(0.0 <= row["tol_recall"] <= 1.0 for row in rows.values())


def test_the_crack_type_bench_types_truth_and_survey_alike(tmp_path, tiny_model, tiny_manifest):
    """Every found metre of true centreline is in the confusion table exactly once; linking only
    ever joins pieces."""
    sets = _sets_of("crack_types.py", tmp_path / "types.json", tiny_model, tiny_manifest, "--link-gaps", "0", "0.02")
    for by_gap in sets.values():
        assert set(by_gap) == {"0", "0.02"}
        assert by_gap["0"]["survey_cracks"] == by_gap["0"]["survey_pieces"] and by_gap["0"]["linked_cracks"] == 0
        assert by_gap["0.02"]["survey_cracks"] <= by_gap["0.02"]["survey_pieces"]
        for result in by_gap.values():
            assert result["true_cracks"] > 0 and result["true_length_m"] > 0
            assert 0.0 <= result["found_share"] <= 1.0
            confused = sum(sum(row.values()) for row in result["confusion_m"].values())
            assert confused == pytest.approx(result["found_share"] * result["true_length_m"], rel=1e-3, abs=1e-3)
            assert sum(result["true_length_by_type_m"].values()) == pytest.approx(result["true_length_m"], abs=1e-2)


def test_the_widening_bench_widens_a_crack_by_exactly_its_share_of_a_pixel(tmp_path, monkeypatch):
    """The premise of bench/widening_detection.py: a crack widened by w px gains w px of its own
    darkness across it (the integral of background - grey, per column), its neighbours lose none,
    and most cracks are left as they were."""
    import importlib

    import rasterio

    from tests.conftest import write_raster

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    bench = importlib.import_module("widening_detection")
    image = np.full((3, 100, 80), 200, np.uint8)
    truth = np.zeros((1, 100, 80), np.uint8)
    rows = (10, 28, 46, 64, 82)  # five cracks two pixels wide, 60 grey on 200
    for top in rows:
        image[:, top : top + 2, 5:75] = 60
        truth[0, top : top + 2, 5:75] = 1
    ortho, truth_path = write_raster(tmp_path / "o.tif", image), write_raster(tmp_path / "t.tif", truth)
    groups = bench.widen_cracks(ortho, truth_path, crack_id=1, min_length=20, seed=0)
    with rasterio.open(ortho) as src:
        widened = src.read().astype(float)
    gained = {}
    for top in rows:
        (group,) = set(groups[top : top + 2, 5:75].ravel())
        darkness = (200 - widened[:, top - 6 : top + 8, 10:70]).sum(axis=1) / 140  # px of crack, per column
        gained[top] = (bench.WIDENINGS_PX[group], float(darkness.mean() - 2))
        assert np.ptp(darkness) < 0.02  # the same all along the crack, in every band
    assert sorted(w for w, _ in gained.values()) == [0.0, 0.0, 0.0, 0.5, 1.0]  # GROUP_SHARES of five
    for widening, gain in gained.values():
        assert gain == pytest.approx(widening, abs=0.02)
    assert (groups[truth[0] == 0] == -1).all()


def test_the_history_growth_bench_puts_each_latest_crack_on_its_true_crack(tmp_path, monkeypatch):
    """bench/history_growth.py rates the latest survey's cracks, which lie where the third flight's
    georeference put them: moved back by its offset, each falls on its own true crack's group."""
    import importlib

    import geopandas as gpd
    import rasterio
    import shapely

    from tests.conftest import write_raster

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    bench = importlib.import_module("history_growth")
    truth = write_raster(tmp_path / "t.tif", np.zeros((1, 300, 300), np.uint8))
    with rasterio.open(truth) as src:
        transform, crs = src.transform, src.crs
    groups = np.full((300, 300), -1)
    rows = {0: (20, 60, 100), 1: (160,), 2: (220,)}  # group -> the rows of its cracks (0: untouched)
    for group, tops in rows.items():
        for top in tops:
            groups[top : top + 3, 20:280] = group
    dx, dy = bench.THIRD_OFFSET_M  # 52 and 67 px: more than the cracks lie apart
    cracks = []
    for group, tops in rows.items():
        for n, top in enumerate(tops):
            (x0, y0), (x1, y1) = transform @ (20, top), transform @ (280, top + 3)
            trend = "growing" if (group > 0 or n == 0) else "stable"  # one false alarm among the untouched
            box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            cracks.append({"trend": trend, "last_seen": bench.FLIGHTS[-1], "length_m": 0.26, "geometry": box})
    gone = shapely.box(*(transform @ (20, 160)), *(transform @ (280, 163)))  # lost: not the latest's
    cracks.append({"trend": "growing", "last_seen": bench.FLIGHTS[1], "length_m": 0.26, "geometry": gone})
    history = gpd.GeoDataFrame(cracks, crs=crs).translate(dx, dy)
    (tmp_path / "h").mkdir()
    gpd.GeoDataFrame(pd.DataFrame(cracks).drop(columns="geometry"), geometry=history, crs=crs).to_file(
        tmp_path / "h" / "history.gpkg", layer="crack_history"
    )
    shares = bench.growing_by_group(tmp_path / "h", truth, groups)
    assert [row["cracks"] for row in shares.values()] == [3, 1, 1]
    assert [row["growing_share"] for row in shares.values()] == pytest.approx([1 / 3, 1, 1])
    assert [row["stable_share"] for row in shares.values()] == pytest.approx([2 / 3, 0, 0])
    assert list(shares) == ["untouched", "+1 px by the third flight", "+2 px by the third flight"]


def test_the_compare_speed_bench_times_compare_per_crack_at_each_size(tmp_path, tiny_manifest):
    """Tiled 2 x 2, the truth holds four times the cracks, and each size is timed."""
    out = tmp_path / "speed.json"
    args = ["--manifest", str(tiny_manifest), "--set", "cfd", "--size", "256", "--tiles", "1", "2", "--out", str(out)]
    _run_bench("compare_speed.py", *args)
    small, large = json.loads(out.read_text())["sizes"]
    assert (small["side_px"], large["side_px"]) == (256, 512)
    assert small["cracks"] > 0 and large["cracks"] == 4 * small["cracks"]
    assert small["per_crack_ratio"] == 1.0 and large["compare_s"] > 0 and large["report_s"] > 0


def test_the_report_speed_bench_reports_each_size_alike_in_one_process_and_in_workers(tmp_path, tiny_manifest):
    """Two worker processes at every size: the defect files are the same bytes as one process's."""
    out = tmp_path / "report.json"
    args = ["--manifest", str(tiny_manifest), "--set", "cfd", "--size", "256", "--tiles", "1", "2"]
    _run_bench("report_speed.py", *args, "--workers", "2", "--out", str(out))
    record = json.loads(out.read_text())
    small, large = record["sizes"]
    assert record["workers"] == 2 and (small["side_px"], large["side_px"]) == (256, 512)
    assert small["cracks"] > 0 and large["cracks"] == 4 * small["cracks"]
    assert small["same_bytes"] and large["same_bytes"]
    assert small["one_process_s"] > 0 and large["workers_s"] > 0


def test_the_collar_bench_finds_the_painted_footprint_block_by_block(tmp_path):
    """Every block of a small painted mosaic read both ways: the collar is the mask's footprint but for
    the JPEG's smear and concave corners, and both rates are measured."""
    out = tmp_path / "collar.json"
    args = ["--size", "1024", "--block", "256", "--workdir", str(tmp_path / "work"), "--out", str(out)]
    _run_bench("collar_cost.py", *args)
    record = json.loads(out.read_text())
    summary = record["summary"]
    assert len(record["blocks"]) == 16 and summary["megapixels"] > 1.0
    assert 0 < summary["footprint_pixels_differing"] < 0.001 * summary["megapixels"] * 1e6
    assert summary["masked_mpix_s"] > 0 and summary["painted_with_collar_mpix_s"] > 0
