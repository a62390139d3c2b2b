"""Real learning on real crack photos: the network, loss and loop actually learn."""

import numpy as np
import pytest
import torch

from pipeline.config import LossConfig, load_params
from pipeline.data import class_lut, find_pairs, load_labelled, split_pairs
from pipeline.evaluate import evaluate_folder, evaluate_items
from pipeline.inference.predict import normalise, predict_classes
from pipeline.metrics import SegmentationMetrics
from pipeline.metrics.summary import read_evaluation
from pipeline.model import build_model
from pipeline.training.loss import segmentation_loss
from pipeline.training.trainer import channel_stats, seed_everything, train_model
from tests.conftest import write_params

pytestmark = pytest.mark.slow


def test_short_training_clearly_beats_initialisation(tmp_path, cfd_subset):
    params = load_params(
        write_params(
            tmp_path / "params.yaml",
            cfd_subset / "images",
            cfd_subset / "masks",
            train={"epochs": 3, "steps_per_epoch": 20, "batch_size": 8, "crop_size": 160},
        )
    )
    pairs = find_pairs(params.data.images, params.data.masks)
    train_pairs, val_pairs = split_pairs(pairs, params.data.val_fraction, params.data.split_seed)
    lut = class_lut(params.data.classes)
    train_items, val_items = load_labelled(train_pairs, lut), load_labelled(val_pairs, lut)
    mean, std = channel_stats(train_items)
    seed_everything(params.train.seed)
    untrained = build_model("dsnet-tiny", 2)
    before = evaluate_items(untrained, val_items, mean, std, torch.device("cpu"), ["background", "crack"])

    result = train_model(params)
    after = result.validation
    assert result.metadata.validation() == after  # stored in the checkpoint as it was selected
    assert [r.epoch for r in result.history] == [1, 2, 3]
    assert after.fg_tol_f1 > before.fg_tol_f1 + 0.2, (before.fg_tol_f1, after.fg_tol_f1)
    assert after.fg_tol_f1 > 0.35

    # The checkpoint on disk scores exactly what training recorded, on the same validation images.
    val_dir = tmp_path / "val"
    for sub in ("images", "masks"):
        (val_dir / sub).mkdir(parents=True)
    for pair in val_pairs:
        (val_dir / "images" / pair.image.name).symlink_to(pair.image)
        (val_dir / "masks" / pair.mask.name).symlink_to(pair.mask)
    rescored = evaluate_folder(result.checkpoint, val_dir / "images", val_dir / "masks", device="cpu")
    assert rescored.fg_tol_f1 == pytest.approx(after.fg_tol_f1, abs=1e-9)
    assert result.metadata.mean == mean and result.metadata.split["val"] == [p.stem for p in val_pairs]


def test_overfits_one_real_image_to_high_iou(cfd_subset):
    (item,) = load_labelled(
        find_pairs(cfd_subset / "images", cfd_subset / "masks")[:1], class_lut(load_params_default_classes())
    )
    pixels, truth = item.image[:, :256].copy(), item.labels[:, :256].copy()  # 320 x 256: half its crack, 60 % the time
    assert (truth == 1).sum() > 500
    seed_everything(0)
    model = build_model("dsnet-tiny", 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=8e-3, weight_decay=0)
    mean, std = channel_stats([item])
    image = torch.tensor(pixels).unsqueeze(0)
    x = normalise(torch.cat([image, image.flip(2)]), mean, std)
    labels = torch.from_numpy(truth).long().unsqueeze(0)
    y = torch.cat([labels, labels.flip(2)])
    steps, cfg = 60, LossConfig(dice_weight=0.5)
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 8e-3 * (1 - step / steps) ** 0.9
        loss = segmentation_loss(model(x), y, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    metrics = SegmentationMetrics(["background", "crack"])
    metrics.update(predict_classes(model.eval(), pixels, mean, std, torch.device("cpu")), truth)
    crack = metrics.compute().classes["crack"]
    assert crack.iou > 0.6, crack
    assert crack.tol_f1 is not None and crack.tol_f1 > 0.95, crack
    assert np.isfinite(loss.item()) and loss.item() < 0.2


def load_params_default_classes():
    from pipeline.config import DataConfig

    return DataConfig().classes


def test_two_data_sets_calibrated_model_scores_the_same_everywhere(tmp_path, cfd_dir, uav_dir, monkeypatch):
    """Train on CFD + UAV75 with partial labels; the calibrated threshold goes into the checkpoint,
    and `msaf evaluate` on the prepared manifest reproduces training's per-set validation exactly."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from pipeline.checkpoint import read_metadata, save_metadata
    from pipeline.evaluate import THRESHOLD_GRID
    from pipeline.metrics.summary import EvaluationSummary
    from tests.conftest import msaf_in_process, write_two_set_params

    params = write_two_set_params(
        tmp_path,
        cfd_dir,
        uav_dir,
        epochs=2,
        steps_per_epoch=3,
        focus=0.5,
        ema_decay=0.9,
        calibrate=["crack"],
        calibrate_scales=[[2, 1]],
        loss={"dice_weight": 0.5, "skeleton_weight": 0.5},
        exposure_floor=170.0,  # the photos (~130) are lifted in training, validation and evaluation alike
    )
    result = train_model(params)
    meta = read_metadata(result.checkpoint)
    assert meta.exposure_floor == 170.0
    val = meta.validation()
    assert val is not None and val.epoch in (1, 2)
    assert set(meta.thresholds) == {"crack"} and meta.thresholds["crack"] in THRESHOLD_GRID
    assert meta.decision == [(1, meta.thresholds["crack"])]
    assert set(val.sets) == {"cfd", "uav"} and val.thresholds == meta.thresholds
    assert val.score == pytest.approx(np.nanmean([s.score for s in val.sets.values()]))
    assert val.sets["cfd"].classes["joint"].support == 0
    assert val.sets["uav"].classes["joint"].support > 0
    assert [r.epoch for r in result.history] == [1, 2] and set(result.history[0].set_scores) == {"cfd", "uav"}
    assert "val_uav_score" in result.history[0].flat() and "threshold_crack" in result.history[0].flat()
    assert set(meta.data_sets) == {"cfd", "uav"}
    # calibrated once more for the multi-scale survey (views 1 and 2), on the chosen weights
    assert set(meta.scale_thresholds) == {"1,2"} and set(meta.scale_thresholds["1,2"]) == {"crack"}
    assert meta.scale_thresholds["1,2"]["crack"] in THRESHOLD_GRID
    assert meta.decision_for((1.0, 2.0)) == [(1, meta.scale_thresholds["1,2"]["crack"])]
    views = EvaluationSummary.model_validate(meta.metrics["views"]["1,2"])
    assert views.thresholds == meta.scale_thresholds["1,2"] and set(views.sets) == {"cfd", "uav"}

    msaf = str(Path(sys.executable).with_name("msaf"))
    params_file = tmp_path / "params.yaml"
    subprocess.run(
        [msaf, "prepare", "--params", str(params_file), "--out", str(tmp_path / "m.json")],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    subprocess.run(
        [
            msaf,
            "evaluate",
            "--model",
            str(result.checkpoint),
            "--manifest",
            str(tmp_path / "m.json"),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "eval.json"),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    evaluation = read_evaluation(tmp_path / "eval.json")
    assert evaluation.score == pytest.approx(val.score, abs=1e-9)
    for name in ("cfd", "uav"):
        assert evaluation.sets[name].class_tol_f1("crack") == pytest.approx(
            val.sets[name].class_tol_f1("crack"), abs=1e-9
        )

    # `msaf evaluate --scales 1,2` scores the views with their thresholds exactly as training did, and
    # `msaf models calibrate` finds the same threshold for a copy of the model without it
    monkeypatch.chdir(tmp_path)  # the manifest's paths are the project's, relative

    def msaf_run(*args: str) -> subprocess.CompletedProcess:  # in this process: no second torch start-up
        done = msaf_in_process(*args)
        assert done.returncode == 0, done.stderr
        return done

    manifest = str(tmp_path / "m.json")
    msaf_run("evaluate", "--model", str(result.checkpoint), "--manifest", manifest, "--device", "cpu",
             "--scales", "1,2", "--out", str(tmp_path / "views.json"))  # fmt: skip
    assert read_evaluation(tmp_path / "views.json").score == pytest.approx(views.score, abs=1e-9)
    bare = tmp_path / "bare.safetensors"
    save_metadata(result.checkpoint, bare, meta.model_copy(update={"scale_thresholds": {}, "metrics": {}}))
    copy = tmp_path / "calibrated.safetensors"
    printed = msaf_run("models", "calibrate", "--model", str(bare), "--manifest", manifest, "--scales", "1,2",
                       "--out", str(copy), "--device", "cpu").stdout  # fmt: skip
    assert read_metadata(copy).scale_thresholds == meta.scale_thresholds and "wrote" in printed
    assert read_metadata(copy).thresholds == meta.thresholds
    stored, copied = load_file(str(result.checkpoint)), load_file(str(copy))
    assert stored.keys() == copied.keys() and all(torch.equal(stored[k], copied[k]) for k in stored)
    # `msaf models exposure` gives a copy without the floor (and with a wrong threshold) the floor back and
    # calibrates every threshold again under it: training's own, the single view's and the views'
    floorless = tmp_path / "floorless.safetensors"
    save_metadata(
        result.checkpoint, floorless, meta.model_copy(update={"exposure_floor": 0.0, "thresholds": {"crack": 0.9}})
    )
    lifted = tmp_path / "lifted.safetensors"
    printed = msaf_run("models", "exposure", "--model", str(floorless), "--manifest", manifest, "--floor", "170",
                       "--out", str(lifted), "--device", "cpu").stdout  # fmt: skip
    relifted = read_metadata(lifted)
    assert relifted.exposure_floor == 170.0 and "floor 0 vs 170" in printed
    assert relifted.thresholds == meta.thresholds and relifted.scale_thresholds == meta.scale_thresholds
    assert relifted.validation().score == pytest.approx(val.score, abs=1e-9)
