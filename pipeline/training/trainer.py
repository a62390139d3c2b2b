"""The training loop: seeded, AMP + channels_last on CUDA, best epoch kept by tolerant F1."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.checkpoint import ModelMetadata, save_checkpoint, weights_sha256
from pipeline.config import Params, TrainConfig
from pipeline.data import (
    LabelledImage,
    Pair,
    class_lut,
    find_pairs,
    fingerprint,
    load_labelled,
    sample_batch,
    split_pairs,
)
from pipeline.data.manifest import Manifest
from pipeline.evaluate import evaluate_items
from pipeline.inference.device import resolve_device
from pipeline.inference.predict import autocast_for, normalise
from pipeline.model import DSNet, build_model
from pipeline.training.loss import segmentation_loss

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainResult:
    """Where the model went and what it scored."""

    checkpoint: Path
    sha256: str
    metadata: ModelMetadata
    history: list[dict[str, Any]]


def seed_everything(seed: int) -> None:
    """Seed torch and ask for deterministic kernels (bit-identical reruns on the same machine)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def channel_stats(items: list[LabelledImage]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std (0..255) of the training images; stored with the model."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for item in items:
        pixels = item.image.reshape(-1, 3).astype(np.float64)
        total += pixels.sum(0)
        total_sq += (pixels**2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-6))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _optimizer(model: DSNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * (1 - step / total) ** cfg.poly_power


def _split(params: Params, manifest: Manifest | None) -> tuple[list[Pair], list[Pair], str]:
    """Train/val pairs and data fingerprint: from the prepared manifest, or straight from params."""
    if manifest is not None:
        return manifest.pairs("train"), manifest.pairs("val"), manifest.fingerprint
    pairs = find_pairs(params.data.images, params.data.masks)
    train, val = split_pairs(pairs, params.data.val_fraction, params.data.split_seed)
    return train, val, fingerprint(pairs)


@dataclass(frozen=True)
class TrainingData:
    """Validated, decoded training and validation images (every data mistake surfaces here)."""

    train_pairs: list[Pair]
    val_pairs: list[Pair]
    train_items: list[LabelledImage]
    val_items: list[LabelledImage]
    fingerprint: str


def load_training_data(params: Params, manifest: Manifest | None = None) -> TrainingData:
    """Find, split, decode and validate the labelled data (before any run is started)."""
    train_pairs, val_pairs, data_fingerprint = _split(params, manifest)
    lut = class_lut(params.data.classes, params.data.ignore_values)
    return TrainingData(train_pairs, val_pairs, load_labelled(train_pairs, lut), load_labelled(val_pairs, lut),
                        data_fingerprint)


def train_model(params: Params, *, out: Path | None = None, on_epoch: EpochCallback | None = None,
                manifest: Manifest | None = None, data: TrainingData | None = None) -> TrainResult:
    """Train per ``params`` and write a checkpoint (the epoch with the best val tolerant F1).

    The checkpoint is byte-identical for the same data, params and machine: its metadata holds
    no wall-clock values except ``created_utc``, which honours ``SOURCE_DATE_EPOCH``.
    """
    cfg = params.train
    out = Path(out or cfg.out)
    data = data or load_training_data(params, manifest)
    train_pairs, val_pairs = data.train_pairs, data.val_pairs
    train_items, val_items, data_fingerprint = data.train_items, data.val_items, data.fingerprint
    mean, std = channel_stats(train_items)

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model = build_model(params.model.preset, len(params.data.classes), **params.model.overrides).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, cfg)
    rng = np.random.default_rng(cfg.seed)
    total_steps = cfg.epochs * cfg.steps_per_epoch

    history: list[dict[str, Any]] = []
    best_score, best_state, best_metrics = -1.0, None, {}
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        losses = []
        for step in range(cfg.steps_per_epoch):
            lr = _lr(cfg, (epoch - 1) * cfg.steps_per_epoch + step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, labels = sample_batch(train_items, cfg.batch_size, cfg.crop_size, cfg.augment, rng)
            x = normalise(torch.from_numpy(images).to(device), mean, std)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(device):
                outputs = model(x)
            loss = segmentation_loss(tuple(o.float() for o in outputs), torch.from_numpy(labels).to(device), cfg.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        val = evaluate_items(model, val_items, mean, std, device, params.data.class_names,
                             params.evaluate.tolerance_px)
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": lr, "val_miou": val["miou"],
                  "val_fg_iou": val["fg_iou"], "val_fg_f1": val["fg_f1"], "val_fg_tol_f1": val["fg_tol_f1"],
                  "seconds": time.perf_counter() - started}
        history.append(record)
        score = -1.0 if np.isnan(val["fg_tol_f1"]) else val["fg_tol_f1"]
        if best_state is None or score > best_score:
            best_score, best_metrics = score, val | {"epoch": epoch}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if on_epoch:
            on_epoch(record)

    model.load_state_dict(best_state)
    metadata = ModelMetadata(
        preset=params.model.preset, architecture=model.config, classes=params.data.classes, tile_size=cfg.crop_size,
        mean=mean, std=std, gsd_m=params.data.gsd_m, metrics={"val": best_metrics},
        data_fingerprint=data_fingerprint, history=[{k: v for k, v in r.items() if k != "seconds"} for r in history],
        weights_sha256=weights_sha256(model),
        split={"train": [p.stem for p in train_pairs], "val": [p.stem for p in val_pairs]},
        params=params.model_dump(mode="json"),
    )
    sha = save_checkpoint(out, model, metadata)
    return TrainResult(out, sha, metadata, history)
