"""The survey engine end to end on real GeoTIFFs: invariance, georeference, edges, bad input."""

import json
import pickle
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.transform import from_origin

from pipeline.config import ScalingConfig, SurveyConfig
from pipeline.errors import MsafError
from pipeline.survey import run_survey
from pipeline.survey_record import SurveyRecord
from tests.conftest import SOURCES, cpu_survey, msaf_in_process, run_msaf, write_raster

CPU = {"device": "cpu", "gsd_policy": "ignore", "batch": 4}


def survey(ortho, out, model, aoi=None, **cfg) -> SurveyRecord:
    return run_survey(ortho, out, SurveyConfig(**(CPU | cfg)), model_path=model, aoi=aoi)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_mask_is_identical_for_any_block_size_and_worker_count(tmp_path, tiny_model, crack_mosaic, monkeypatch):
    """Also: every runner of every survey in the process shares one network prepared for inference
    (batch norms folded once, not once per runner and survey), and the two workers' mask is the same."""
    from pipeline import survey as survey_module
    from pipeline.inference import runner as runner_module

    folds = []
    real_fold = runner_module.fold_batch_norms
    monkeypatch.setattr(runner_module, "fold_batch_norms", lambda model: folds.append(model) or real_fold(model))
    monkeypatch.setattr(survey_module, "_MODELS", {})
    ortho, _ = crack_mosaic
    runs = {
        "one_tile": {"block": 96},
        "several": {"block": 200},
        "whole": {"block": 4096},
        "two_workers": {"block": 200, "workers": 2, "readers": 2},
    }
    outputs = {name: survey(ortho, tmp_path / name, tiny_model, **cfg) for name, cfg in runs.items()}
    reference_mask = read(tmp_path / "whole" / "mask.tif")
    reference_conf = read(tmp_path / "whole" / "confidence.tif")
    assert set(np.unique(reference_mask)) == {0, 1, 255}  # real structure: crack, background, nodata
    assert len(np.unique(reference_conf)) > 50
    for name in runs:
        np.testing.assert_array_equal(read(tmp_path / name / "mask.tif"), reference_mask, err_msg=name)
        np.testing.assert_array_equal(read(tmp_path / name / "confidence.tif"), reference_conf, err_msg=name)
        assert outputs[name].class_pixels == outputs["whole"].class_pixels
    assert outputs["one_tile"].tiling.blocks > outputs["several"].tiling.blocks > 1
    assert len(folds) == 1  # four surveys, five runners


def test_the_block_pipeline_reads_blocks_into_buffers_earlier_blocks_gave_back(tmp_path, tiny_model, crack_mosaic):
    """The reader's buffers come back once a block is inferred (with two workers and reads ahead,
    a few are in flight at once), and every block's result is the one a fresh read gives."""
    import torch

    from pipeline.checkpoint import load_checkpoint
    from pipeline.inference.blend import infer_block
    from pipeline.inference.runner import TileRunner
    from pipeline.raster.source import BlockReader
    from pipeline.survey import BlockPipeline, prepare_survey, read_box

    ortho, _ = crack_mosaic
    prepared = prepare_survey(ortho, tmp_path / "out", SurveyConfig(**(CPU | {"block": 96})), model_path=tiny_model)
    model, meta = load_checkpoint(tiny_model)
    device = torch.device("cpu")

    def runner() -> TileRunner:
        return TileRunner(model, meta.mean, meta.std, device, 4, prepared.grid.tile_shape, thresholds=meta.decision)

    blocks = prepared.blocks()
    reader = BlockReader(prepared.info, 2, max(box.height * box.width for box in map(read_box, blocks)))
    buffers: dict[int, np.ndarray] = {}  # held, so no id is reused by a later buffer
    read = reader.read

    def recording_read(box, keep_for=None):
        pixels, valid = read(box, keep_for)
        buffers[id(pixels.base)] = pixels.base
        return pixels, valid

    reader.read = recording_read
    results = {}
    try:
        BlockPipeline(reader, [runner(), runner()], prepared.grid).run(
            blocks, lambda block, result: results.__setitem__(block.index, result)
        )
    finally:
        reader.close()
    # one buffer per block in flight at most: 4 inferring or queued, 1 waiting to be, 2 reads ahead
    assert len(blocks) > 12 and len(buffers) <= 7
    fresh_reader, fresh_runner = BlockReader(prepared.info, 2), runner()
    try:
        for block in blocks:
            expected = infer_block(fresh_runner, prepared.grid, block, *fresh_reader.read(block.region))
            np.testing.assert_array_equal(results[block.index].classes, expected.classes)
            np.testing.assert_array_equal(results[block.index].confidence, expected.confidence)
    finally:
        fresh_reader.close()


def test_stitched_survey_scores_like_whole_photo_inference(tmp_path, tiny_model, crack_mosaic, cfd_dir):
    """Broken stitching, normalisation or nodata handling would drop the survey's score."""
    from pipeline.evaluate import evaluate_folder
    from pipeline.metrics import SegmentationMetrics

    ortho, truth = crack_mosaic
    survey(ortho, tmp_path, tiny_model)
    truth_ids, mask = read(truth), read(tmp_path / "mask.tif")
    np.testing.assert_array_equal(mask == 255, truth_ids == 255)  # footprint carried exactly

    def tol_f1(prediction: np.ndarray) -> float:
        metrics = SegmentationMetrics(["background", "crack"])
        metrics.update(prediction, truth_ids)
        return metrics.compute().fg_tol_f1

    surveyed = tol_f1(mask)
    everything_crack = tol_f1(np.where(truth_ids == 255, 255, 1).astype(np.uint8))
    photos = evaluate_folder(tiny_model, cfd_dir / "images", cfd_dir / "masks", device="cpu").fg_tol_f1
    assert surveyed > 2 * everything_crack, (surveyed, everything_crack)
    assert surveyed > 0.8 * photos, (surveyed, photos)


def test_outputs_are_cogs_with_georeference_provenance_and_record(tmp_path, tiny_model, crack_mosaic):
    ortho, _ = crack_mosaic
    record = survey(ortho, tmp_path, tiny_model, block=256)
    with rasterio.open(ortho) as src, rasterio.open(tmp_path / "mask.tif") as mask:
        assert (mask.crs, mask.transform, mask.width, mask.height) == (src.crs, src.transform, src.width, src.height)
        assert mask.nodata == 255 and mask.dtypes[0] == "uint8"
        assert mask.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert mask.compression.value == "DEFLATE" and mask.profile["tiled"]
        tags = mask.tags()
        assert tags["MSAF_MODEL_SHA256"] == record.model.sha256
        assert tags["MSAF_SOURCE_FINGERPRINT"] == record.input.fingerprint
        assert json.loads(tags["MSAF_PARAMS"])["tile"] == 128
        counts = np.bincount(mask.read(1).ravel(), minlength=256)
    on_disk = json.loads((tmp_path / "survey.json").read_text())
    assert on_disk["class_pixels"] == {"background": int(counts[0]), "crack": int(counts[1])}
    assert set(on_disk["timings"]) == {"validate_s", "infer_s", "cog_s", "total_s"}
    assert on_disk["throughput_mpix_s"]["end_to_end"] > 0 and on_disk["peak_rss_mb"] > 0
    assert on_disk["input"]["compression"] == "JPEG" and on_disk["tiling"]["overlap"] == 32
    assert not list(tmp_path.glob(".*partial*"))


def test_a_multi_scale_survey_is_exact_for_any_block_size_and_decides_by_its_own_thresholds(
    tmp_path, tiny_model, crack_mosaic
):
    """Each tile's views depend on that tile alone, so the mask does not depend on how the raster is cut;
    the views are part of the results' key, the record and the COG's provenance; a model calibrated
    for them decides by those thresholds, one that is not by its single view's."""
    from pipeline.checkpoint import read_metadata, save_metadata
    from pipeline.survey import prepare_survey

    ortho, _ = crack_mosaic
    views = {"scales": (1.0, 2.0)}
    whole = survey(ortho, tmp_path / "whole", tiny_model, block=4096, **views)
    cut = survey(ortho, tmp_path / "cut", tiny_model, block=200, workers=2, readers=2, **views)
    single = survey(ortho, tmp_path / "single", tiny_model, block=4096)
    mask = read(tmp_path / "whole" / "mask.tif")
    np.testing.assert_array_equal(read(tmp_path / "cut" / "mask.tif"), mask)
    confidence = read(tmp_path / "whole" / "confidence.tif")
    np.testing.assert_array_equal(read(tmp_path / "cut" / "confidence.tif"), confidence)
    assert cut.tiling.blocks > whole.tiling.blocks == 1
    changed = (mask != read(tmp_path / "single" / "mask.tif")).sum()
    assert 0 < changed < 0.05 * mask.size  # the second view moves thin edges, not the whole answer
    meta = read_metadata(tiny_model)
    assert whole.scales == [1.0, 2.0] and single.scales == [1.0]
    assert whole.thresholds == single.thresholds == meta.thresholds  # no calibration for (1, 2) in it
    with rasterio.open(tmp_path / "whole" / "mask.tif") as ds:
        assert json.loads(ds.tags()["MSAF_PARAMS"])["scales"] == [1.0, 2.0]
    cfg = SurveyConfig(**CPU)
    keys = {
        prepare_survey(ortho, tmp_path / "k", cfg.model_copy(update=update), model_path=tiny_model).key
        for update in ({}, views, {"scales": (1.0, 1.5)})
    }
    assert len(keys) == 3  # a resumed survey never mixes blocks of other views

    calibrated = tmp_path / "calibrated.safetensors"
    lower = {name: 0.25 for name in meta.thresholds} or {"crack": 0.25}
    save_metadata(tiny_model, calibrated, meta.model_copy(update={"scale_thresholds": {"1,2": lower}}))
    decided = survey(ortho, tmp_path / "calibrated", calibrated, block=4096, **views)
    assert decided.thresholds == lower
    assert decided.class_pixels["crack"] > whole.class_pixels["crack"]  # a lower bar: more crack pixels
    from pipeline.config import ReportConfig
    from pipeline.report.build import report_survey

    report_survey(tmp_path / "calibrated", ReportConfig())
    assert "1x and 2x; decided: crack at p &gt;= 0.25" in (tmp_path / "calibrated" / "report.html").read_text()


@pytest.mark.parametrize("block", [1024, 300])  # 300: blocks that do not align with any overview cell
def test_large_output_gets_overviews_sampled_from_the_blocks(tmp_path, tiny_model, block):
    """The overviews are written from each block while it is in memory: each is exactly the mask's
    top-left pixel of every 2^k cell (GDAL's NEAREST), whatever the block size, tags and nodata kept."""
    data = np.random.default_rng(0).integers(90, 140, (3, 1100, 1300), dtype=np.uint8)
    ortho = write_raster(tmp_path / "big.tif", data, tiled=True, compress="deflate")
    record = survey(ortho, tmp_path / "out", tiny_model, block=block, tile=256, overlap=32)
    for name in ("mask.tif", "confidence.tif"):
        with rasterio.open(tmp_path / "out" / name) as layer:
            assert layer.overviews(1) == [2, 4]  # until one 512-px tile holds it, as GDAL's COG driver does
            assert layer.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert layer.tags()["MSAF_MODEL_SHA256"] == record.model.sha256
            full = layer.read(1)
            for factor in (2, 4):
                shape = (-(-1100 // factor), -(-1300 // factor))
                np.testing.assert_array_equal(layer.read(1, out_shape=shape), full[::factor, ::factor])
    assert not [p.name for p in (tmp_path / "out").iterdir() if "partial" in p.name]


@pytest.mark.parametrize("name", ["webodm_orthophoto.tif", "deepforest_OSBS_029.tif"])
def test_real_orthophotos_round_trip_georeference_and_footprint(tmp_path, tiny_model, name):
    ortho = SOURCES / "ortho" / name
    survey(ortho, tmp_path, tiny_model)
    with rasterio.open(ortho) as src, rasterio.open(tmp_path / "mask.tif") as mask:
        assert mask.crs == src.crs and mask.transform == src.transform and mask.shape == src.shape
        footprint = src.dataset_mask() > 0
        out = mask.read(1)
    assert (~footprint).sum() > 0  # both files have real nodata (alpha / nodata 255)
    np.testing.assert_array_equal(out == 255, ~footprint)


@pytest.mark.parametrize(
    ("crs", "transform"),
    [
        ("EPSG:32633", from_origin(400000, 5500000, 0.002, 0.002)),
        ("EPSG:4326", from_origin(13.4, 52.5, 2e-8, 2e-8)),
    ],
)
def test_generated_rasters_keep_crs_and_transform(tmp_path, tiny_model, crs, transform):
    data = np.random.default_rng(1).integers(0, 256, (3, 150, 170), dtype=np.uint8)
    ortho = write_raster(tmp_path / "in.tif", data, crs=crs, transform=transform)
    record = survey(ortho, tmp_path / "out", tiny_model)
    with rasterio.open(tmp_path / "out" / "mask.tif") as mask:
        assert mask.crs.to_string() == crs and mask.transform == transform and mask.shape == (150, 170)
    # geodesic ground metres at the centre: 2 mm over UTM's point scale factor there (0.99972, 100 km
    # west of the central meridian) and, for degrees, the WGS84 lengths of 2e-8 degree east and north
    if crs == "EPSG:32633":
        lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(400000.17, 5499999.85)
        expected_gsd = 0.002 / pyproj.Proj(crs).get_factors(lon, lat).meridional_scale
    else:
        geod = pyproj.Geod(ellps="WGS84")
        east, north = geod.inv(13.4, 52.5, 13.4 + 2e-8, 52.5)[2], geod.inv(13.4, 52.5, 13.4, 52.5 - 2e-8)[2]
        expected_gsd = (east + north) / 2
    assert record.input.gsd_m == pytest.approx(expected_gsd, rel=1e-4)


@pytest.mark.parametrize("shape", [(1, 300), (300, 1), (50, 40), (333, 250), (97, 1000)])
def test_edge_shapes(tmp_path, tiny_model, shape):
    data = np.random.default_rng(2).integers(0, 256, (3, *shape), dtype=np.uint8)
    ortho = write_raster(tmp_path / "in.tif", data)
    survey(ortho, tmp_path / "out", tiny_model, block=64)
    mask = read(tmp_path / "out" / "mask.tif")
    assert mask.shape == shape and set(np.unique(mask)) <= {0, 1}


@pytest.mark.parametrize(
    ("name", "factor", "dtype"),
    [
        ("x16", 16, np.uint16),
        ("x16-hot-pixels", 16, np.uint16),  # two saturated pixels must not make it "16-bit" (16x darker)
        ("x257", 257, np.uint16),
        ("12-bit", 4095 / 255, np.uint16),
        ("float", 1 / 255, np.float32),
    ],
)
def test_rescaled_copies_of_8_bit_imagery_give_the_same_mask(tmp_path, tiny_model, crack_mosaic, name, factor, dtype):
    ortho, _ = crack_mosaic
    with rasterio.open(ortho) as src:
        rgb8 = src.read()
        profile = {"crs": src.crs, "transform": src.transform, "nodata": 0}
    write_raster(tmp_path / "8.tif", rgb8, **profile)
    scaled = rgb8.astype(np.float64) * factor
    if name.endswith("hot-pixels"):
        scaled[:, 100, 100] = scaled[:, 200, 200] = 65535  # on the decimated sample's grid
    write_raster(tmp_path / "deep.tif", (scaled if dtype == np.float32 else np.round(scaled)).astype(dtype), **profile)
    survey(tmp_path / "8.tif", tmp_path / "o8", tiny_model)
    record = survey(tmp_path / "deep.tif", tmp_path / "deep", tiny_model)  # default: linear to the bit depth
    assert record.input.dtype == np.dtype(dtype).name
    expected_top = {"x16": 4095, "x16-hot-pixels": 4095, "x257": 65535, "12-bit": 4095, "float": 1}[name]
    assert record.input.scaling == [[0, expected_top]] * 3
    eight, deep = read(tmp_path / "o8" / "mask.tif"), read(tmp_path / "deep" / "mask.tif")
    assert (eight == deep).mean() >= 0.995, name
    cracks = int((eight == 1).sum())
    assert cracks > 1000 and abs(int((deep == 1).sum()) - cracks) < 0.02 * cracks


def test_sixteen_bit_percentile_stretch_and_range_are_options(tmp_path, tiny_model, crack_mosaic):
    ortho, _ = crack_mosaic
    with rasterio.open(ortho) as src:
        rgb8 = src.read()
        profile = {"crs": src.crs, "transform": src.transform, "nodata": 0}
    write_raster(tmp_path / "8.tif", rgb8, **profile)
    write_raster(tmp_path / "16.tif", rgb8.astype(np.uint16) * 257, **profile)
    survey(tmp_path / "8.tif", tmp_path / "o8", tiny_model)
    full_range = ScalingConfig(mode="range", min=0, max=65535)
    record = run_survey(
        tmp_path / "16.tif", tmp_path / "o16", SurveyConfig(**CPU, scaling=full_range), model_path=tiny_model
    )
    np.testing.assert_array_equal(read(tmp_path / "o16" / "mask.tif"), read(tmp_path / "o8" / "mask.tif"))
    stretched = run_survey(
        tmp_path / "16.tif",
        tmp_path / "p16",
        SurveyConfig(**CPU, scaling=ScalingConfig(mode="percentile")),
        model_path=tiny_model,
    )
    assert stretched.input.scaling is not None
    lo, hi = stretched.input.scaling[0]
    red = rgb8[0][(rgb8 > 0).any(axis=0)].astype(float) * 257  # GDAL: nodata only where all bands are 0
    assert lo == pytest.approx(np.percentile(red, 2), rel=0.05)
    assert hi == pytest.approx(np.percentile(red, 98), rel=0.05)
    assert record.input.dtype == "uint16"


def test_gsd_mismatch_warns_or_refuses(tmp_path, tiny_model):
    data = np.full((3, 64, 64), 120, np.uint8)
    ortho = write_raster(tmp_path / "coarse.tif", data, transform=from_origin(0, 0, 0.01, 0.01))  # 10 mm vs 1 mm
    record = run_survey(ortho, tmp_path / "w", SurveyConfig(device="cpu"), model_path=tiny_model)
    assert "differs from the model's training GSD" in (record.gsd_warning or "")
    with pytest.raises(MsafError, match="gsd_policy=refuse"):
        run_survey(ortho, tmp_path / "r", SurveyConfig(device="cpu", gsd_policy="refuse"), model_path=tiny_model)
    assert not (tmp_path / "r" / "mask.tif").exists()


def test_a_failed_rerun_leaves_the_previous_good_output_untouched(tmp_path, tiny_model, crack_mosaic):
    pixels = np.random.default_rng(3).integers(0, 256, (3, 600, 600), dtype=np.uint8)
    ortho = write_raster(tmp_path / "in.tif", pixels, tiled=True, blockxsize=128, blockysize=128, compress="deflate")
    survey(ortho, tmp_path / "out", tiny_model)
    good = (tmp_path / "out" / "mask.tif").read_bytes()
    broken = tmp_path / "broken.tif"
    data = bytearray(ortho.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4000] = np.random.default_rng(4).bytes(4000)  # corrupt tiles mid-file, tail intact
    broken.write_bytes(bytes(data))
    with pytest.raises(MsafError, match="read failed"):
        survey(broken, tmp_path / "out", tiny_model, block=128)
    assert (tmp_path / "out" / "mask.tif").read_bytes() == good
    assert not list((tmp_path / "out").glob(".*partial*"))


def _bad_inputs(tmp_path: Path, crack_mosaic) -> dict[str, tuple[Path, str]]:
    ortho, _ = crack_mosaic
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(ortho.read_bytes()[: ortho.stat().st_size // 2])
    no_crs = write_raster(tmp_path / "nocrs.tif", np.zeros((3, 20, 20), np.uint8), crs=None)
    two_bands = write_raster(tmp_path / "two.tif", np.zeros((2, 20, 20), np.uint8))
    return {
        "not_raster": (text, "not a GeoTIFF/COG, JPEG, PNG or JPEG 2000 raster by its content"),
        "truncated": (truncated, "truncated"),
        "no_crs": (no_crs, "no CRS"),
        "two_bands": (two_bands, "2 band(s)"),
    }


@pytest.mark.parametrize("case", ["not_raster", "truncated", "no_crs", "two_bands", "unwritable", "no_model"])
def test_bad_input_is_one_clear_line_and_no_output(tmp_path, tiny_model, crack_mosaic, case):
    ortho, _ = crack_mosaic
    out, model = tmp_path / "out", tiny_model
    expected = {"unwritable": "cannot create output folder", "no_model": "model file not found"}.get(case)
    if case in ("unwritable", "no_model"):
        if case == "unwritable":
            blocker = tmp_path / "file"
            blocker.write_text("x")
            out = blocker / "out"
        else:
            model = tmp_path / "missing.safetensors"
    else:
        ortho, expected = _bad_inputs(tmp_path, crack_mosaic)[case]
    result = msaf_in_process("survey", str(ortho), "--out", str(out), "--model", str(model), "--device", "cpu")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.stderr
    assert not (out / "mask.tif").exists() if out.parent.is_dir() else True


def test_assume_crs_rescues_a_raster_without_one(tmp_path, tiny_model):
    no_crs = write_raster(tmp_path / "nocrs.tif", np.full((3, 40, 40), 100, np.uint8), crs=None)
    result = run_msaf(
        *cpu_survey(no_crs, tmp_path / "out", tiny_model, "--assume-crs", "EPSG:32633"),
    )
    assert result.returncode == 0, result.stderr
    with rasterio.open(tmp_path / "out" / "mask.tif") as mask:
        assert mask.crs.to_epsg() == 32633
    assert json.loads((tmp_path / "out" / "survey.json").read_text())["input"]["crs_assumed"] is True


def test_mosaic_cli_writes_ortho_and_exact_truth(tmp_path, cfd_dir):
    result = run_msaf(
        "mosaic",
        "--images",
        str(cfd_dir / "images"),
        "--masks",
        str(cfd_dir / "masks"),
        "--out",
        str(tmp_path / "o.tif"),
        "--truth",
        str(tmp_path / "t.tif"),
        "--size",
        "1000x700",
        "--gsd",
        "0.002",
        "--crs",
        "EPSG:32617",
        "--compress",
        "deflate",
        "--footprint",
        "--seed",
        "5",
    )
    assert result.returncode == 0, result.stderr
    with rasterio.open(tmp_path / "o.tif") as ortho, rasterio.open(tmp_path / "t.tif") as truth:
        assert ortho.count == 4 and ortho.colorinterp[3].name == "alpha" and ortho.crs.to_epsg() == 32617
        assert ortho.res == (0.002, 0.002) and truth.transform == ortho.transform
        footprint = ortho.dataset_mask() > 0
        labels = truth.read(1)
    np.testing.assert_array_equal(labels == 255, ~footprint)
    crack_share = (labels == 1).sum() / footprint.sum()
    assert 0.005 < crack_share < 0.05  # CFD photos carry ~1.6 % crack pixels


def test_the_input_is_hashed_beside_the_model_checks_and_a_refusal_does_not_wait_for_it(
    monkeypatch, tmp_path, tiny_model, crack_mosaic
):
    """A large orthomosaic takes seconds to hash: validation hashes it on a thread while it checks the
    model, and a model it refuses is one line at once, not after the hash."""
    import threading
    import time

    import pipeline.survey as survey
    from pipeline.raster.source import source_fingerprint
    from tests.test_one_line_errors import _edited_model

    cfg = SurveyConfig(device="cpu", gsd_policy="ignore")
    prepared = survey.prepare_survey(crack_mosaic[0], tmp_path / "a", cfg, model_path=tiny_model)
    assert prepared.source_fingerprint == source_fingerprint(prepared.info)  # the same value as before

    hashing, release = threading.Event(), threading.Event()

    def slow_fingerprint(info):
        hashing.set()
        release.wait(30)  # a 2.5 GB input at ~1 GB/s, and then some
        return "never used"

    monkeypatch.setattr(survey, "source_fingerprint", slow_fingerprint)
    mixed_up = _edited_model(tiny_model, tmp_path / "mixed.safetensors", width=48)
    started = time.perf_counter()
    with pytest.raises(MsafError, match="weights do not match the architecture"):
        survey.prepare_survey(crack_mosaic[0], tmp_path / "b", cfg, model_path=mixed_up)
    assert hashing.is_set() and time.perf_counter() - started < 10  # the hash had begun; not waited for
    release.set()

    def failing_fingerprint(info):
        raise MsafError("the input changed while it was read")

    monkeypatch.setattr(survey, "source_fingerprint", failing_fingerprint)
    with pytest.raises(MsafError, match="changed while it was read"):  # its failure reaches the caller
        survey.prepare_survey(crack_mosaic[0], tmp_path / "c", cfg, model_path=tiny_model)


def test_an_area_of_interest_keeps_the_survey_inside_its_polygons(tmp_path, tiny_model, crack_mosaic, monkeypatch):
    """Polygons in another CRS (a GeoJSON in lon/lat) cut the survey: nodata outside, the full survey's
    answer inside beyond a tile of the edge (tiles straddling it are mirror-filled, as at a footprint
    edge), blocks wholly outside never read, the area in survey.json and in the results' key."""
    import geopandas as gpd
    import shapely

    from pipeline.fingerprint import file_fingerprint
    from pipeline.raster.source import BlockReader
    from pipeline.survey import prepare_survey

    ortho, _ = crack_mosaic
    with rasterio.open(ortho) as ds:
        bounds, crs, transform = ds.bounds, ds.crs, ds.transform
    split = 300  # the area: columns left of 300, as drawn in the raster's CRS and saved in lon/lat
    x = transform.c + split * transform.a
    area = tmp_path / "deck.geojson"
    drawn = gpd.GeoDataFrame(geometry=[shapely.box(bounds.left, bounds.bottom, x, bounds.top)], crs=crs)
    drawn.to_crs(4326).to_file(area)
    reads: list[int] = []
    real_read = BlockReader.read

    def counted_read(self, box, keep_for=None):
        reads.append(box.col0)
        return real_read(self, box, keep_for)

    monkeypatch.setattr(BlockReader, "read", counted_read)
    cut = survey(ortho, tmp_path / "cut", tiny_model, block=128, aoi=area)
    assert reads and max(reads) < split  # blocks right of the area were not read
    whole = survey(ortho, tmp_path / "whole", tiny_model, block=128)
    mask, whole_mask = read(tmp_path / "cut" / "mask.tif"), read(tmp_path / "whole" / "mask.tif")
    confidence = read(tmp_path / "cut" / "confidence.tif")
    assert (mask[:, split + 1 :] == 255).all() and (confidence[:, split + 1 :] == 0).all()
    tile = cut.tiling.tile
    np.testing.assert_array_equal(mask[:, : split - tile], whole_mask[:, : split - tile])
    assert (mask[:, : split - 1] != 255).sum() == (whole_mask[:, : split - 1] != 255).sum()  # the footprint kept
    assert cut.area_of_interest is not None and whole.area_of_interest is None
    assert cut.area_of_interest.fingerprint == file_fingerprint(area)
    assert cut.area_of_interest.raster_share == pytest.approx(split / 700, abs=0.002)
    assert 0 < cut.class_pixels["crack"] < whole.class_pixels["crack"]
    cfg = SurveyConfig(**CPU, block=128)
    prepared = {a: prepare_survey(ortho, tmp_path / "k", cfg, model_path=tiny_model, aoi=a) for a in (None, area)}
    assert prepared[None].key != prepared[area].key  # a resumed survey never mixes blocks cut by another area
    travelled = pickle.loads(pickle.dumps(prepared[area]))  # as it goes to a Dask worker
    assert travelled.key == prepared[area].key and travelled.aoi.pixels.equals(prepared[area].aoi.pixels)
    from pipeline.config import ReportConfig
    from pipeline.report.build import report_survey

    cyan = {}
    for name in ("cut", "whole"):
        report_survey(tmp_path / name, ReportConfig())
        cyan[name] = _outline_pixels(tmp_path / name / "report.html")
    assert f"{area}: " in (tmp_path / "cut" / "report.html").read_text()  # the report says what was surveyed
    assert cyan["cut"] > 200 and cyan["whole"] == 0  # and its map outlines it (dashed cyan)


def _outline_pixels(report: Path) -> int:
    """Pixels of the report's overview map in the surveyed area's outline colour (#00e5ff)."""
    import base64
    import io
    import re

    from PIL import Image

    encoded = re.search(r'id="overview" alt="overview map" src="data:image/png;base64,([^"]+)"', report.read_text())
    assert encoded is not None
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded.group(1)))).convert("RGB")).astype(int)
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    return int(((red < 60) & (green > 190) & (blue > 220)).sum())


def test_the_cli_surveys_inside_an_area_of_interest_through_the_flow(tmp_path, tiny_model, crack_mosaic):
    """`msaf survey --aoi` through Prefect's flow: the area reaches the survey, which says so."""
    import geopandas as gpd
    import shapely

    ortho, _ = crack_mosaic
    with rasterio.open(ortho) as ds:
        bounds, crs = ds.bounds, ds.crs
    area = tmp_path / "pier.gpkg"
    middle = (bounds.left + bounds.right) / 2
    gpd.GeoDataFrame(geometry=[shapely.box(middle, bounds.bottom, bounds.right, bounds.top)], crs=crs).to_file(area)
    out = tmp_path / "out"
    result = run_msaf(*cpu_survey(ortho, out, tiny_model, "--aoi", str(area), "--no-track", "--no-report"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"area of interest: {area}" in result.stdout and "of the raster)" in result.stdout
    record = json.loads((out / "survey.json").read_text())
    assert record["area_of_interest"]["path"] == str(area) and record["area_of_interest"]["raster_share"] == 0.5
    assert (read(out / "mask.tif")[:, : 350 - 1] == 255).all()
