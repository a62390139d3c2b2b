"""Surveys at any GSD: each block inferred at the model's working GSD, the answer on the input's grid."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from pipeline.config import SurveyConfig
from pipeline.raster.resample import AxisMap, GridScale
from pipeline.survey import infer_blocks, prepare_survey, run_survey
from tests.conftest import write_raster

CPU = {"device": "cpu", "batch": 4}


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.mark.parametrize(("ratio", "n_in"), [(0.5, 10), (1 / 3, 11), (0.7, 13), (2.0, 5), (1.4, 9)])
def test_axis_weights_are_normalised_local_and_exact_for_constants(ratio, n_in):
    n_out = int(np.ceil(n_in * ratio))
    index, weight = AxisMap(n_in, n_out, ratio).taps(0, n_out)
    np.testing.assert_allclose(weight.sum(1), 1.0, rtol=1e-6)
    assert index.min() >= 0 and index.max() < n_in and (weight >= 0).all()
    # a target pixel reads only source pixels that its footprint (or its two neighbours' centres) touch
    centres = (np.arange(n_out) + 0.5) / ratio
    assert (np.abs(index + 0.5 - centres[:, None])[weight > 0] <= max(1.0, 0.5 / ratio + 0.5) + 1e-9).all()
    # the same pixel gets the same taps from any window: the base of block-size invariance
    part_index, part_weight = AxisMap(n_in, n_out, ratio).taps(1, n_out)
    np.testing.assert_array_equal(part_index, index[1:])
    np.testing.assert_array_equal(part_weight, weight[1:])


def test_halving_is_the_two_by_two_mean_and_back_is_bilinear():
    scale = GridScale(4, 6, 0.5)
    assert scale.work_shape == (2, 3)
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 2
    from pipeline.raster.grid import Box

    whole = Box(0, 0, 4, 6)
    work, valid = scale.to_work(pixels.transpose(2, 0, 1), np.ones((4, 6), bool), whole, Box(0, 0, 2, 3))
    work = work.transpose(1, 2, 0)
    expected = pixels.reshape(2, 2, 3, 2, 3).astype(np.float64).mean((1, 3))
    np.testing.assert_array_equal(work, np.rint(expected).astype(np.uint8))
    assert valid.all()
    import torch

    probs = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
    back = scale.to_input(probs, Box(0, 0, 2, 3), whole)
    assert back.shape == (1, 4, 6)
    # input row 1's centre sits 1/4 of the way from working row 0 to row 1 (clamped at the edges)
    assert back[0, 0, 0] == 0 and back[0, 1, 0] == pytest.approx(0.25) and back[0, 3, 0] == 1


@pytest.fixture(scope="module")
def ground(crack_mosaic) -> tuple[np.ndarray, np.ndarray]:
    """A 300 x 400 corner of the crack mosaic at 1 mm: pixels (H, W, 3) and footprint (cracks, a
    stretch of footprint edge and nodata; small, so the suite stays quick)."""
    ortho, _ = crack_mosaic
    with rasterio.open(ortho) as ds:
        pixels = ds.read((1, 2, 3)).transpose(1, 2, 0)
        valid = ds.dataset_mask() > 0
    return pixels[:300, :400], valid[:300, :400]


def write_ground(path: Path, pixels: np.ndarray, valid: np.ndarray, gsd: float) -> Path:
    alpha = np.where(valid, 255, 0).astype(np.uint8)
    data = np.concatenate([pixels.transpose(2, 0, 1), alpha[None]])
    return write_raster(path, data, transform=from_origin(500000, 5000000, gsd, gsd), photometric="RGB", alpha="yes")


def test_half_mm_survey_equals_the_working_gsd_survey_on_the_same_ground(tmp_path, tiny_model, ground):
    """0.5 mm pixels of the same ground (each 1 mm pixel doubled) are averaged back to exactly the
    1 mm picture, so the model sees the same thing; the answer differs from the 1 mm survey's only
    where the probabilities are interpolated between pixels."""
    pixels, valid = ground
    one_mm = write_ground(tmp_path / "1mm.tif", pixels, valid, 0.001)
    fine = write_ground(
        tmp_path / "05mm.tif", pixels.repeat(2, 0).repeat(2, 1), valid.repeat(2, 0).repeat(2, 1), 0.0005
    )
    reference = run_survey(one_mm, tmp_path / "ref", SurveyConfig(**CPU), model_path=tiny_model)
    record = run_survey(fine, tmp_path / "fine", SurveyConfig(**CPU), model_path=tiny_model)
    assert reference.tiling.resample_factor == 1.0
    assert record.tiling.resample_factor == 0.5  # exactly: 2 x 0.50020 mm ground pixels (UTM scale 0.9996)
    assert record.tiling.working_gsd_m == pytest.approx(0.001 / 0.9996, rel=1e-4)
    assert record.tiling.working_shape == list(valid.shape) and record.gsd_warning is None
    with rasterio.open(fine) as src, rasterio.open(tmp_path / "fine" / "mask.tif") as mask:
        assert mask.shape == src.shape and mask.transform == src.transform and mask.crs == src.crs
        out = mask.read(1)
    expected = read(tmp_path / "ref" / "mask.tif").repeat(2, 0).repeat(2, 1)
    np.testing.assert_array_equal(out == 255, expected == 255)  # the footprint, exactly
    inside = expected != 255
    assert (out[inside] == expected[inside]).mean() > 0.98
    cracks = (out == 1) | (expected == 1)
    assert ((out == 1) & (expected == 1)).sum() / cracks.sum() > 0.8  # crack IoU against the 1 mm answer

    from pipeline.config import ReportConfig
    from pipeline.report.build import report_survey

    report_survey(tmp_path / "fine", ReportConfig())
    html = (tmp_path / "fine" / "report.html").read_text()
    assert "0.5 mm pixels were reduced 2.00x for the model" in html
    assert "views 1,2 (--scales 1,2) also reads them as they are" in html  # the hint for a finer flight

    unscaled = run_survey(fine, tmp_path / "off", SurveyConfig(**CPU, resample="off"), model_path=tiny_model)
    assert unscaled.tiling.resample_factor == 1.0
    assert (read(tmp_path / "off" / "mask.tif")[inside] == expected[inside]).mean() < (
        out[inside] == expected[inside]
    ).mean()


def test_coarse_survey_keeps_the_input_grid_and_footprint_for_any_block_size(tmp_path, tiny_model, ground):
    pixels, valid = ground
    coarse_pixels = pixels.reshape(pixels.shape[0] // 2, 2, pixels.shape[1] // 2, 2, 3).mean((1, 3)).round()
    coarse_valid = valid.reshape(valid.shape[0] // 2, 2, valid.shape[1] // 2, 2).all((1, 3))
    coarse = write_ground(tmp_path / "2mm.tif", coarse_pixels.astype(np.uint8), coarse_valid, 0.002)
    runs = {"whole": {"block": 4096}, "small": {"block": 100}, "two_workers": {"block": 150, "workers": 2}}
    records = {
        name: run_survey(coarse, tmp_path / name, SurveyConfig(**CPU, **cfg), model_path=tiny_model)
        for name, cfg in runs.items()
    }
    reference = read(tmp_path / "whole" / "mask.tif")
    with rasterio.open(coarse) as src, rasterio.open(tmp_path / "whole" / "mask.tif") as mask:
        assert mask.shape == src.shape and mask.transform == src.transform
    np.testing.assert_array_equal(reference == 255, ~coarse_valid)
    assert records["whole"].tiling.resample_factor == pytest.approx(2.0)
    assert records["small"].tiling.blocks > 1 and set(np.unique(reference)) >= {0, 1, 255}
    for name in runs:
        np.testing.assert_array_equal(read(tmp_path / name / "mask.tif"), reference, err_msg=name)
        np.testing.assert_array_equal(
            read(tmp_path / name / "confidence.tif"), read(tmp_path / "whole" / "confidence.tif"), err_msg=name
        )
    # The report says at which GSD the model looked, and that widths come from the input's pixels.
    from pipeline.config import ReportConfig
    from pipeline.report.build import report_survey

    report_survey(tmp_path / "whole", ReportConfig())
    html = (tmp_path / "whole" / "report.html").read_text()
    assert "1 mm grid (the working GSD of the model): the input" in html
    assert "2 mm pixels were enlarged 2.00x for the model" in html


def test_resampled_survey_resumes_and_its_key_covers_the_resampling(tmp_path, tiny_model, ground):
    pixels, valid = ground
    fine = write_ground(tmp_path / "07mm.tif", pixels[:, :300], valid[:, :300], 0.0007)
    cfg = SurveyConfig(**CPU, block=100)
    uninterrupted = run_survey(fine, tmp_path / "once", cfg, model_path=tiny_model)
    first = prepare_survey(fine, tmp_path / "out", cfg, model_path=tiny_model)
    assert first.factor == pytest.approx(0.7) and first.n_blocks == 9
    infer_blocks(first, indices=[0, 4, 8])  # then "killed"
    resumed = run_survey(fine, tmp_path / "out", cfg, model_path=tiny_model)
    assert resumed.tiling.blocks_reused == 3
    np.testing.assert_array_equal(read(tmp_path / "out" / "mask.tif"), read(tmp_path / "once" / "mask.tif"))
    assert resumed.class_pixels == uninterrupted.class_pixels
    off = prepare_survey(fine, tmp_path / "off", SurveyConfig(**CPU, block=100, resample="off"), model_path=tiny_model)
    assert off.factor == 1.0 and off.key != first.key
    # the same input and model surveyed at another working GSD (another factor) is another survey
    from dataclasses import replace

    assert replace(first, factor=0.5).key not in (first.key, off.key)


@pytest.mark.parametrize(("factor", "shape"), [(2.0, (9000, 7000)), (2.0, (30000, 20000)), (0.5, (30000, 20000))])
def test_work_per_block_is_bounded_whatever_the_raster_size(factor, shape):
    """Memory is per block: the working region a block infers and the input window it decodes stay
    about one block (plus a tile of halo) on any raster; an enlarged survey uses input blocks of
    block / factor (`PreparedSurvey.input_block`), so its working blocks are about ``block`` too."""
    block, tile, overlap = 1024, 256, 64
    scale = GridScale(*shape, factor)
    input_block = max(64, int(block / factor)) if factor > 1 else block
    blocks = scale.blocks(scale.work_grid(tile, overlap), input_block)
    assert len(blocks) == -(-shape[0] // input_block) * -(-shape[1] // input_block)
    work_side = max(max(b.work.region.height, b.work.region.width) for b in blocks)
    read_side = max(max(b.read.height, b.read.width) for b in blocks)
    assert work_side <= input_block * factor + 2 * tile + 2
    assert read_side <= input_block + (2 * tile + 4) / factor
    covered = sum(b.core.height * b.core.width for b in blocks)
    assert covered == shape[0] * shape[1]  # the cores tile the input exactly


def test_an_enlarged_survey_takes_smaller_input_blocks(tmp_path, tiny_model, ground):
    pixels, valid = ground
    coarse = write_ground(tmp_path / "2mm.tif", pixels[::2, ::2], valid[::2, ::2], 0.002)
    prepared = prepare_survey(coarse, tmp_path / "out", SurveyConfig(**CPU, block=4096), model_path=tiny_model)
    assert prepared.factor == pytest.approx(2.0) and prepared.input_block == 2048


@pytest.mark.parametrize(
    ("factor", "scales", "expected"),
    [
        (0.5, (1.0, 2.0), (1.0, (0.5, 1.0))),  # a 0.5 mm input: its own pixels are the 2x view
        (0.7, (1.0, 2.0), (1.0, (0.7, 1.4))),
        (0.3, (1.0, 2.0), (0.6, (0.5, 1.0))),  # finer than the finest view needs: reduced to it
        (0.48, (1.0, 2.0), (0.96, (0.5, 1.0))),  # snapping to the input's grid would shrink a view below 0.5
        (0.5, (1.0,), (0.5, (1.0,))),  # one view: the model's GSD, as before
        (2.0, (1.0, 2.0), (2.0, (1.0, 2.0))),  # a coarser input: enlarged, then its views
        (1.0, (1.0, 2.0), (1.0, (1.0, 2.0))),
        (0.25, (1.0, 4.0), (0.25, (1.0, 4.0))),  # its own grid would need a 0.25 view: kept as it was
    ],
)
def test_views_are_relative_to_the_models_gsd_and_the_finest_reads_a_finer_inputs_own_pixels(factor, scales, expected):
    from pipeline.raster.resample import views_on_grid

    grid, views = views_on_grid(scales, factor)
    assert (grid, views) == expected
    # the same looks at the ground: each view's GSD relative to the model's is kept
    assert [v * grid / factor for v in views] == pytest.approx(list(scales), rel=2e-3)


def test_a_finer_input_with_views_runs_on_its_own_pixels_and_decides_by_the_views_calibration(
    tmp_path, tiny_model, ground
):
    """Views 1,2 of a 0.5 mm input are its pixels reduced 2x and as they are: exactly the survey of
    the input as it is with views 0.5,1, decided by the thresholds calibrated for views 1,2; recorded
    as such, with the model's GSD unchanged (what the change report compares)."""
    from pipeline.checkpoint import read_metadata, save_metadata
    from pipeline.config import ReportConfig
    from pipeline.report.build import report_survey

    pixels, valid = ground
    fine = write_ground(
        tmp_path / "05mm.tif", pixels.repeat(2, 0).repeat(2, 1), valid.repeat(2, 0).repeat(2, 1), 0.0005
    )
    meta = read_metadata(tiny_model)
    lower = {name: 0.3 for name in meta.thresholds} or {"crack": 0.3}
    calibrated = tmp_path / "calibrated.safetensors"
    save_metadata(tiny_model, calibrated, meta.model_copy(update={"scale_thresholds": {"1,2": lower, "0.5,1": lower}}))

    record = run_survey(fine, tmp_path / "views", SurveyConfig(**CPU, scales=(1.0, 2.0)), model_path=calibrated)
    assert record.tiling.resample_factor == 1.0 and record.tiling.views == [0.5, 1.0]
    assert record.scales == [1.0, 2.0] and record.thresholds == lower
    assert record.model_gsd_m == pytest.approx(0.001 / 0.9996, rel=1e-4)
    as_is = SurveyConfig(**CPU, scales=(0.5, 1.0), resample="off")
    same = run_survey(fine, tmp_path / "as_is", as_is, model_path=calibrated)
    assert same.tiling.views is None and same.thresholds == lower
    np.testing.assert_array_equal(read(tmp_path / "views" / "mask.tif"), read(tmp_path / "as_is" / "mask.tif"))
    reduced = run_survey(fine, tmp_path / "reduced", SurveyConfig(**CPU), model_path=calibrated)
    assert reduced.tiling.resample_factor == 0.5 and reduced.model_gsd_m == pytest.approx(record.model_gsd_m)
    with rasterio.open(tmp_path / "views" / "mask.tif") as ds:
        assert json.loads(ds.tags()["MSAF_PARAMS"])["views"] == [0.5, 1.0]
    keys = {
        prepare_survey(fine, tmp_path / "k", cfg, model_path=calibrated).key
        for cfg in (SurveyConfig(**CPU, scales=(1.0, 2.0)), as_is)
    }
    assert len(keys) == 2  # the same pixels, but another setting: its own results
    report_survey(tmp_path / "views", ReportConfig())
    html = (tmp_path / "views" / "report.html").read_text()
    assert "1x and 2x of the model&#39;s GSD (0.5x and 1x of the input&#39;s 0.5 mm pixels)" in html
