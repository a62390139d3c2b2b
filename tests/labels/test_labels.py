"""Label sets on an orthomosaic's grid: vector labels rasterised, a reviewed survey turned into labels."""

from __future__ import annotations

import json
import shutil

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from shapely.geometry import LineString, box

from pipeline.class_ids import NO_CLASS
from pipeline.config import ReportConfig
from pipeline.labels.from_survey import labels_from_survey
from pipeline.labels.labelset import read_labelset
from pipeline.labels.rasterize import rasterize_labels
from pipeline.metrics import tolerant_counts
from pipeline.report.defects import build_defects
from pipeline.report.outputs import write_tables
from pipeline.review import read_review
from tests.conftest import assert_one_line_error, msaf_in_process, run_msaf, write_raster

CLASSES = ["background", "crack", "joint"]


def tolerant_iou(pred: np.ndarray, true: np.ndarray, tolerance: float = 2) -> float:
    """The IoU that the 2-px tolerant F1 corresponds to: F1 / (2 - F1)."""
    matched_pred, total_pred, matched_true, total_true = tolerant_counts(pred, true, tolerance)
    precision, recall = matched_pred / total_pred, matched_true / total_true
    f1 = 2 * precision * recall / (precision + recall)
    return f1 / (2 - f1)


def test_crack_lines_in_another_crs_rasterise_to_the_truth(tmp_path, crack_mosaic):
    ortho, truth_path = crack_mosaic
    # The truth drawn as an inspector would: crack centrelines with their widths (from the truth
    # mask's own centreline layer), saved in lon/lat with a class field.
    tables = build_defects(truth_path, None, CLASSES, ReportConfig(min_area_m2=0))
    lines = tables.centerlines[["width_mm", "geometry"]].assign(**{"class": "crack"}).to_crs("EPSG:4326")
    lines.to_file(tmp_path / "cracks.gpkg", layer="drawn", engine="pyogrio")
    # the area of interest: the western two thirds, in yet another CRS
    with rasterio.open(ortho) as ds:
        west = box(ds.bounds.left, ds.bounds.bottom, ds.bounds.left + 0.466, ds.bounds.top)
        valid = ds.dataset_mask() > 0
    gpd.GeoDataFrame(geometry=[west], crs="EPSG:32633").to_crs("EPSG:3857").to_file(tmp_path / "aoi.geojson")

    record = rasterize_labels(
        ortho, tmp_path / "cracks.gpkg", tmp_path / "set", CLASSES, ["joint"], aoi=tmp_path / "aoi.geojson"
    )
    with rasterio.open(tmp_path / "set" / "labels.tif") as out, rasterio.open(truth_path) as truth_file:
        labels, truth = out.read(1), truth_file.read(1)
        assert (out.width, out.height, out.transform, out.crs) == (700, 530, truth_file.transform, truth_file.crs)
        assert out.nodata == NO_CLASS
    inside = np.zeros_like(valid)
    inside[:, :466] = True
    inside &= valid
    assert tolerant_iou((labels == 1) & inside, (truth == 1) & inside) >= 0.9
    assert set(np.unique(labels[inside])) <= {0, 1}  # complete inside the area: background or crack
    assert (labels[~valid] == NO_CLASS).all()  # the orthomosaic's nodata is never a label
    outside = ~inside & valid
    assert (labels[outside] != 0).all() and (labels[outside] == 1).any()  # drawn cracks count everywhere
    saved = read_labelset(tmp_path / "set")
    assert saved == record and record.origin == "vectors" and record.classes == CLASSES
    assert record.pixels["crack"] == int((labels == 1).sum()) and record.sources[0].features == len(lines)
    assert record.image_fingerprint and record.area_of_interest is not None


def test_labels_of_unknown_classes_or_points_are_one_line(tmp_path, crack_mosaic):
    gpd.GeoDataFrame(
        {"class": ["pothole"]}, geometry=[LineString([(400000.1, 4999999.9), (400000.2, 4999999.9)])], crs="EPSG:32633"
    ).to_file(tmp_path / "bad.gpkg")
    result = run_msaf(
        "labels", "rasterize", str(crack_mosaic[0]), str(tmp_path / "bad.gpkg"), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, "['pothole']", "class")
    assert not (tmp_path / "o" / "labels.tif").exists()


def _survey_with_defects(tmp_path, surveyed) -> tuple:
    """A survey folder on the real survey's grid (its survey.json) whose mask holds three cracks and
    a joint, reported: what an inspector opens in QGIS."""
    folder = tmp_path / "survey"
    folder.mkdir()
    shutil.copy(surveyed / "survey.json", folder / "survey.json")
    with rasterio.open(surveyed / "mask.tif") as real:
        shape, transform = (real.height, real.width), real.transform
    mask = np.zeros(shape, np.uint8)
    mask[100:104, 100:200] = 1  # A: to be confirmed
    mask[150:153, 100:180] = 1  # B: a false alarm
    mask[200:203, 100:190] = 1  # C: left unreviewed
    mask[250:256, 80:300] = 2  # J: a joint
    mask[:, 600:] = NO_CLASS  # outside the survey's footprint
    write_raster(folder / "mask.tif", mask[None], transform=transform, nodata=NO_CLASS)
    tables = build_defects(folder / "mask.tif", None, CLASSES, ReportConfig())
    write_tables(folder, tables)
    return folder, mask, tables, transform


def _review(folder, tables, transform) -> None:
    """What an inspector does in QGIS: set two verdicts, draw a missed crack and the reviewed area."""

    def defect_on(row: float) -> int:  # the defect whose centroid lies on this (fractional) pixel row
        near = (tables.defects["centroid_y"] - (transform.f + row * transform.e)).abs() < abs(transform.e)
        return int(tables.defects.loc[near, "defect_id"].item())

    gpkg = folder / "defects.gpkg"
    defects = gpd.read_file(gpkg, layer="defects")
    defects.loc[defects["defect_id"] == defect_on(102), "review"] = "confirmed"
    defects.loc[defects["defect_id"] == defect_on(151.5), "review"] = "false alarm"
    pyogrio.write_dataframe(defects, gpkg, layer="defects")  # the layer rewritten with the verdicts

    def centre(col: int, row: int) -> tuple[float, float]:
        return transform.c + (col + 0.5) * transform.a, transform.f + (row + 0.5) * transform.e

    line = LineString([centre(120, 300), centre(260, 300)])
    missed = gpd.GeoDataFrame(
        {"class": [None], "width_mm": [None], "note": ["hairline"]}, geometry=[line], crs=tables.crs
    )
    pyogrio.write_dataframe(missed, gpkg, layer="missed_cracks", append=True)
    (x0, y0), (x1, y1) = centre(50, 350), centre(650, 90)
    area = box(x0 - transform.a / 2, y0 - transform.e / 2, x1 - transform.a / 2, y1 - transform.e / 2)  # pixel edges
    reviewed = gpd.GeoDataFrame({"note": ["span 2"]}, geometry=[area], crs=tables.crs)
    pyogrio.write_dataframe(reviewed, gpkg, layer="reviewed_area", append=True)


@pytest.mark.slow  # the session's real survey gives the grid and survey.json
def test_a_reviewed_survey_gives_exactly_the_expected_labels(tmp_path, surveyed):
    folder, mask, tables, transform = _survey_with_defects(tmp_path, surveyed)
    _review(folder, tables, transform)
    review = read_review(folder / "defects.gpkg")
    assert (len(review.reviewed), len(review.missed), len(review.areas)) == (2, 1, 1) and review.has_edits

    record = labels_from_survey(folder, tmp_path / "set", ReportConfig())
    with rasterio.open(tmp_path / "set" / "labels.tif") as out:
        labels = out.read(1)
    expected = np.full(mask.shape, NO_CLASS, np.uint8)
    expected[90:350, 50:650] = 0  # the reviewed area...
    expected[(mask != 0)] = NO_CLASS  # ...where the model saw nothing; what nobody reviewed is ignored
    expected[100:104, 100:200] = 1  # A confirmed: its mask pixels
    expected[150:153, 100:180] = 0  # B false alarm: background
    expected[300, 120:261] = 1  # the missed crack, 1 px wide from end to end
    expected[mask == NO_CLASS] = NO_CLASS  # outside the footprint
    np.testing.assert_array_equal(labels, expected)
    assert record.origin == "review" and record.survey == str(folder.resolve())
    assert record.image_fingerprint == json.loads((folder / "survey.json").read_text())["input"]["fingerprint"]
    assert record.pixels["crack"] == 400 + 141

    # the report will not overwrite the review, and an unreviewed survey has nothing to give
    result = msaf_in_process("report", str(folder))
    assert_one_line_error(result, "holds an inspector's review", "labels from-survey")
    assert (folder / "defects.gpkg").is_file() and len(read_review(folder / "defects.gpkg").missed) == 1


@pytest.mark.slow
def test_an_unreviewed_survey_is_one_line(tmp_path, surveyed):
    from pipeline.errors import MsafError

    folder, *_ = _survey_with_defects(tmp_path, surveyed)
    with pytest.raises(MsafError, match=r"nothing reviewed yet; in QGIS set `review`.*reviewed_area"):
        labels_from_survey(folder, tmp_path / "set", ReportConfig())
    assert not (tmp_path / "set" / "labels.tif").exists()


def test_a_geo_set_is_split_by_whole_blocks_and_read_at_the_working_gsd(tmp_path, crack_mosaic):
    import yaml

    from pipeline.config import load_params
    from pipeline.data.geo import SPLIT_CELL, split_cell
    from pipeline.data.manifest import build_manifest, load_manifest, save_manifest

    ortho, truth_path = crack_mosaic
    tables = build_defects(truth_path, None, CLASSES, ReportConfig(min_area_m2=0))
    tables.centerlines.assign(**{"class": "crack"}).to_file(tmp_path / "cracks.gpkg", engine="pyogrio")
    rasterize_labels(ortho, tmp_path / "cracks.gpkg", tmp_path / "site", CLASSES, ["joint"])
    classes = [
        {"name": "background", "values": [0]},
        {"name": "crack", "values": [255]},
        {"name": "joint", "values": [204]},
    ]
    spec = {"name": "site", "kind": "geo", "labelset": str(tmp_path / "site"), "block_px": 64, "val_fraction": 0.3}
    seen = {}
    for gsd in (0.001, 0.002):  # the model's working GSD: the orthomosaic's own, and twice as coarse
        path = tmp_path / f"params-{gsd}.yaml"
        path.write_text(yaml.safe_dump({"data": {"classes": classes, "gsd_m": gsd, "sets": [spec]}}))
        manifest = build_manifest(load_params(path).data)
        save_manifest(manifest, tmp_path / "manifest.json")
        assert load_manifest(tmp_path / "manifest.json") == manifest
        (geo,) = manifest.sets
        block = round(64 * gsd / 0.001)
        assert geo.kind == "geo" and geo.block == block and geo.train and geo.val
        boxes = {
            split: [tuple(int(v[1:]) for v in n.split("_")) for n in getattr(geo, split)] for split in ("train", "val")
        }
        covered = {split: np.zeros((530, 700), bool) for split in boxes}
        for split, corners in boxes.items():
            for row, col in corners:
                assert row % block == 0 and col % block == 0
                covered[split][row : row + block, col : col + block] = True
        assert not (covered["train"] & covered["val"]).any()  # no pixel on both sides
        cell = split_cell([_box(n, block) for n in geo.train + geo.val], block)  # whole cells go to validation
        assert cell == block * SPLIT_CELL if gsd == 0.001 else cell <= block * SPLIT_CELL
        val_cells = {(r // cell, c // cell) for r, c in boxes["val"]}
        assert not val_cells & {(r // cell, c // cell) for r, c in boxes["train"]}
        with rasterio.open(tmp_path / "site" / "labels.tif") as labels:
            labelled = labels.read(1) != NO_CLASS
        assert labelled[covered["train"] | covered["val"]].sum() == labelled.sum()  # every label is in a block
        items = manifest.load("train")["site"]
        assert len(items) == len(geo.train) and items[0].image.dtype == np.uint8
        full = [
            item
            for item, (row, col) in zip(items, boxes["train"], strict=True)
            if row + block <= 530 and col + block <= 700
        ]
        assert {item.image.shape for item in full} == {(64, 64, 3)} and all(
            item.labels.shape == (64, 64) for item in full
        )
        assert set(np.unique(np.concatenate([i.labels.ravel() for i in items]))) <= {0, 1, NO_CLASS}
        seen[gsd] = sum(int((item.labels == 1).sum()) for item in items)
    assert seen[0.002] < seen[0.001]  # the same cracks on a coarser grid: fewer crack pixels


def _box(name: str, block: int):
    from pipeline.raster.grid import Box

    row, col = (int(v[1:]) for v in name.split("_"))
    return Box(row, col, row + block, col + block)


def _masonry_site(tmp_path, masonry_dir):
    """A georeferenced masonry wall (patches the tiny CFD model never saw) labelled as a user would:
    its cracks drawn as lines with widths, rasterised into a label set."""
    from pipeline.config import DataConfig
    from pipeline.data.mosaic import compose_mosaic

    ortho, truth = tmp_path / "wall.tif", tmp_path / "wall_truth.tif"
    classes = DataConfig().classes  # background, crack
    compose_mosaic(
        masonry_dir / "images",
        masonry_dir / "masks",
        ortho,
        truth,
        448,
        448,
        0.001,
        "EPSG:32633",
        classes,
        compress="deflate",
        seed=5,
    )
    tables = build_defects(truth, None, ["background", "crack"], ReportConfig(min_area_m2=0))
    tables.centerlines.assign(**{"class": "crack"}).to_file(tmp_path / "drawn.gpkg", engine="pyogrio")
    rasterize_labels(ortho, tmp_path / "drawn.gpkg", tmp_path / "site", ["background", "crack"], [])
    return tmp_path / "site"


@pytest.mark.slow
def test_fine_tuning_the_champion_on_a_geo_set_improves_its_held_back_area(tmp_path, masonry_dir, tiny_model):
    import yaml

    from pipeline.config import load_params
    from pipeline.evaluate import evaluate_sets
    from pipeline.training.trainer import load_training_data, train_model

    site = _masonry_site(tmp_path, masonry_dir)
    scores = {}
    for init in (str(tiny_model), "none"):
        root = tmp_path / ("tuned" if init != "none" else "scratch")
        root.mkdir()
        params = {
            "data": {
                "sets": [{"name": "site", "kind": "geo", "labelset": str(site), "block_px": 64, "val_fraction": 0.25}]
            },
            "model": {"preset": "dsnet-tiny"},
            "train": {
                "out": str(root / "model.safetensors"),
                "epochs": 1,
                "steps_per_epoch": 12,
                "batch_size": 4,
                "crop_size": 64,
                "lr": 0.002,
                "device": "cpu",
                "focus": 0.5,
                "init": init,
            },
        }
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        loaded = load_params(root / "params.yaml")
        result = train_model(loaded)
        scores[init] = result.validation.sets["site"].score
        learnt = result.metadata.data_sets["site"]  # the model names the label set it learnt from
        assert learnt["kind"] == "geo" and learnt["labelset"] == str(site) and len(learnt["fingerprint"]) == 64
    data = load_training_data(loaded)
    before = evaluate_sets(tiny_model, data.val_sets, device="cpu").sets["site"].score
    tuned, scratch = scores[str(tiny_model)], scores["none"]
    assert tuned > before + 0.05, (before, tuned)  # it learnt the user's wall...
    assert tuned > scratch + 0.05, (scratch, tuned)  # ...from the champion's weights, not from nothing


def test_labels_within_one_split_cell_are_split_by_smaller_cells():
    from pipeline.data.geo import split_blocks, split_cell
    from pipeline.raster.grid import Box

    boxes = [Box(r, c, r + 64, c + 64) for r in (0, 64) for c in (0, 64)]  # 2 x 2 blocks: one 4 x 4 cell
    assert split_cell(boxes, 64) == 64  # halved (4, 2, 1 blocks) until there are two cells
    train, val = split_blocks(boxes, 64, 0.25, 42)
    assert len(val) == 1 and len(train) == 3 and not set(train) & set(val)
    assert split_blocks(boxes[:1], 64, 0.25, 42) == (boxes[:1], [])  # one block: nothing to hold back
