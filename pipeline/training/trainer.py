"""The training loop: seeded, AMP + channels_last on CUDA, best epoch kept by tolerant F1."""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.checkpoint import ModelMetadata, save_checkpoint, weights_sha256
from pipeline.config import Params, TrainConfig
from pipeline.data import CropSampler, LabelledImage
from pipeline.data.augment import CropBatch
from pipeline.data.manifest import Manifest, build_manifest
from pipeline.errors import MsafError
from pipeline.evaluate import calibrate_classes, calibrate_views, evaluate_groups, predict_items
from pipeline.inference.device import resolve_device, resolve_precision
from pipeline.inference.predict import autocast_for, normalise
from pipeline.inference.scales import SINGLE, Scales, scales_key
from pipeline.metrics.summary import EvaluationSummary
from pipeline.model import build_model
from pipeline.model.families import network_config
from pipeline.training.distill import Teacher, resolve_teacher
from pipeline.training.history import TIMINGS, EpochRecord
from pipeline.training.init import load_initial_weights, resolve_init
from pipeline.training.loss import segmentation_loss
from pipeline.training.state import TrainingState, discard_state, load_state, resume_key, save_state, state_dir_for

EpochCallback = Callable[[EpochRecord], None]


@dataclass(frozen=True)
class TrainResult:
    """Where the model went and what it scored."""

    checkpoint: Path
    sha256: str
    metadata: ModelMetadata
    history: list[EpochRecord]
    validation: EvaluationSummary  # of the epoch kept


def seed_everything(seed: int) -> None:
    """Seed torch and ask for deterministic kernels (bit-identical reruns on the same machine).

    The flag is set on torch's core directly: ``torch.use_deterministic_algorithms`` also imports
    the compiler (``torch._inductor``) to set its own flag, 1.8 s of every training's start-up,
    and training never compiles. Where the compiler is already loaded its flag is set as well."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = True  # type: ignore[attr-defined]


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


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)


def freeze_all_but(model: torch.nn.Module, prefixes: Sequence[str]) -> list[torch.nn.Module]:
    """Keep only parameters named with one of ``prefixes`` trainable (none given: all); returns the
    modules whose parameters are all frozen, which stay in eval mode while training (their
    BatchNorm statistics are part of what is frozen). With the trunk frozen no gradient flows
    through it, so a step costs the forward pass and the trainable part's backward."""
    if not prefixes:
        return []
    names = [name for name, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unknown:
        raise MsafError(
            f"train.trainable: no parameter of this network is named {unknown[0]}...; "
            f"its top-level parts are {sorted({n.split('.')[0] for n in names})}"
        )
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(name.startswith(p) for p in prefixes))
    return [
        module
        for module in model.modules()
        if any(True for _ in module.parameters()) and not any(p.requires_grad for p in module.parameters())
    ]


def _lr(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * (1 - step / total) ** cfg.poly_power


@dataclass(frozen=True)
class TrainingData:
    """Validated, decoded training and validation images per data set (every data mistake surfaces here)."""

    manifest: Manifest
    train_sets: dict[str, list[LabelledImage]]
    val_sets: dict[str, list[LabelledImage]]

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the data the model is trained on (stored in the checkpoint)."""
        return self.manifest.fingerprint

    @property
    def train_items(self) -> list[LabelledImage]:
        """Every training image, all data sets together."""
        return [item for items in self.train_sets.values() for item in items]


def load_training_data(params: Params, manifest: Manifest | None = None) -> TrainingData:
    """Find, split, decode and validate the labelled data (before any run is started)."""
    manifest = manifest or build_manifest(params.data)
    if manifest.class_names != params.data.class_names:
        raise MsafError(
            f"the manifest's classes {manifest.class_names} differ from params.yaml's "
            f"{params.data.class_names}; re-run `msaf prepare`"
        )
    return TrainingData(manifest, manifest.load("train"), manifest.load("val"))


class WeightAverage:
    """Exponential moving average of the weights and BatchNorm statistics (warm-up: decay grows
    as (1 + t) / (10 + t)), the model that is validated and saved when enabled."""

    def __init__(self, model: torch.nn.Module, decay: float, frozen: Sequence[torch.nn.Module] = ()) -> None:
        self.decay = decay
        self.steps = 0
        self.moving = _moving_state(model, frozen)  # frozen tensors are left exactly as they are
        self.shadow = copy.deepcopy(model).eval()
        for parameter in self.shadow.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the averages one step towards the model's current weights."""
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        current = model.state_dict()
        for name, value in self.shadow.state_dict().items():
            if name not in self.moving:
                continue
            if value.is_floating_point():
                value.mul_(decay).add_(current[name].detach(), alpha=1 - decay)
            else:
                value.copy_(current[name])


def _moving_state(model: torch.nn.Module, frozen: Sequence[torch.nn.Module]) -> set[str]:
    """State-dict names that training changes: trainable parameters and the buffers of modules
    that are not frozen (BatchNorm statistics of a frozen module stay as they were)."""
    still = {id(module) for module in frozen}
    names = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    for prefix, module in model.named_modules():
        if id(module) not in still:
            names |= {f"{prefix}.{name}" if prefix else name for name, _ in module.named_buffers(recurse=False)}
    return names


def training_batches(
    sampler: CropSampler, batch_size: int, seed: int, steps: int, *, threads: int | None = None, start: int = 0
) -> Iterator[CropBatch]:
    """The batches of steps start..steps-1 in order, drawn ahead by worker threads while the model trains.

    Each step's batch comes from its own generator seeded by (seed, step), so the stream is the
    same whatever the number of threads (numpy and scipy release the GIL for the heavy parts).
    """
    threads = threads or min(4, os.cpu_count() or 1)
    ahead = 2 * threads

    def draw(step: int) -> CropBatch:
        return sampler.batch(batch_size, np.random.default_rng([seed, step]))

    with ThreadPoolExecutor(threads, thread_name_prefix="crops") as pool:
        pending = [pool.submit(draw, step) for step in range(start, min(start + ahead, steps))]
        for step in range(start, steps):
            batch = pending.pop(0).result()
            if step + ahead < steps:
                pending.append(pool.submit(draw, step + ahead))
            yield batch


def _may_hide(unlabelled: list[tuple[int, ...]], num_classes: int, device: torch.device) -> torch.Tensor | None:
    """(N, C) bool of the classes each crop's data set never labels; None when every set labels all."""
    if not any(unlabelled):
        return None
    mask = torch.zeros(len(unlabelled), num_classes, dtype=torch.bool)
    for row, classes in enumerate(unlabelled):
        mask[row, list(classes)] = True
    return mask.to(device)


def validate(
    model: torch.nn.Module,
    data: TrainingData,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    params: Params,
) -> EvaluationSummary:
    """Per-set validation metrics with the decision thresholds calibrated on these images."""
    names = params.data.class_names
    floor = params.train.exposure_floor
    groups = {
        name: predict_items(model, items, mean, std, device, exposure_floor=floor)
        for name, items in data.val_sets.items()
        if items
    }
    thresholds = calibrate_classes(groups, names, params.train.calibrate, params.evaluate.tolerance_px)
    return evaluate_groups(groups, names, params.evaluate.tolerance_px, thresholds, params.train.calibrate)


def with_view_calibrations(
    model: torch.nn.Module,
    metadata: ModelMetadata,
    val_sets: Mapping[str, Sequence[LabelledImage]],
    views: Sequence[Scales],
    tolerance_px: float,
) -> ModelMetadata:
    """The metadata with thresholds calibrated for each multi-scale survey in ``views`` (and their
    validation scores under ``metrics["views"]``): done once, on the chosen weights, since each view
    costs a validation pass at scale² the pixels."""
    by_views, scores = dict(metadata.scale_thresholds), dict(metadata.metrics.get("views", {}))
    sets = {name: items for name, items in val_sets.items() if items}
    for scales in views:
        if tuple(scales) == SINGLE:
            continue
        thresholds, summary = calibrate_views(model, metadata, sets, tuple(scales), tolerance_px)
        by_views[scales_key(scales)], scores[scales_key(scales)] = thresholds, summary.to_json()
    if not by_views:
        return metadata
    return metadata.model_copy(
        update={"scale_thresholds": by_views, "metrics": metadata.metrics | ({"views": scores} if scores else {})}
    )


def train_model(
    params: Params,
    *,
    out: Path | None = None,
    on_epoch: EpochCallback | None = None,
    manifest: Manifest | None = None,
    data: TrainingData | None = None,
    state_dir: Path | None = None,
) -> TrainResult:
    """Train per ``params`` and write a checkpoint (the epoch with the best val tolerant F1).

    ``train.init`` starts from those weights (tensors of another shape start fresh) and keeps their
    input normalisation. The full training state is saved to ``state_dir`` (default: beside ``out``) every
    ``train.state_minutes`` and after each epoch; a rerun with the same params, data and init
    continues from it and gives the same checkpoint as an uninterrupted run. The checkpoint is
    byte-identical for the same data, params and machine: its metadata holds no wall-clock values
    except ``created_utc``, which honours ``SOURCE_DATE_EPOCH``.
    """
    cfg = params.train
    out = Path(out or cfg.out)
    data = data or load_training_data(params, manifest)
    num_classes = len(params.data.classes)
    init = resolve_init(cfg.init, params.registry.name, params.registry.alias)
    teacher_path = resolve_teacher(cfg.distill, init, params.registry.name, params.registry.alias)

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    bf16 = resolve_precision(cfg.precision, device) == "bf16"
    model = build_model(params.model.preset, num_classes, **params.model.overrides)
    start = load_initial_weights(model, init, params.data.class_names) if init else None
    mean, std = (start.metadata.mean, start.metadata.std) if start else channel_stats(data.train_items)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    teacher = Teacher.load(teacher_path, cfg.distill, params.data.class_names, device) if teacher_path else None
    frozen = freeze_all_but(model, cfg.trainable)
    optimizer = _optimizer(model, cfg)
    spe = cfg.steps_per_epoch
    total_steps = cfg.epochs * spe
    sampler = CropSampler(
        data.train_sets,
        cfg.crop_size,
        cfg.augment,
        focus=cfg.focus,
        weights={s.name: s.weight for s in data.manifest.sets},
    )
    average = WeightAverage(model, cfg.ema_decay, frozen) if cfg.ema_decay else None
    scored_model = average.shadow if average else model

    folder = state_dir or state_dir_for(out)
    key = resume_key(params, data.fingerprint, start.sha256 if start else None, teacher.sha256 if teacher else None)
    shadow = average.shadow if average else None
    state = load_state(folder, key, model, optimizer, shadow) or TrainingState(key)
    if average:
        average.steps = state.ema_steps
    best_metrics = EvaluationSummary.model_validate(state.best_metrics) if state.best_metrics else None
    saved_at = time.monotonic()

    def save() -> None:
        nonlocal saved_at
        state.ema_steps = average.steps if average else 0
        save_state(folder, state, model, optimizer, shadow)
        saved_at = time.monotonic()

    batches = training_batches(sampler, cfg.batch_size, cfg.seed, total_steps, start=state.step)
    for epoch in range(len(state.history) + 1, cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        for module in frozen:
            module.eval()
        for step in range(state.step - (epoch - 1) * spe, spe):
            lr = _lr(cfg, (epoch - 1) * spe + step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = next(batches)
            images = torch.from_numpy(batch.images).to(device)
            x = normalise(images, mean, std, cfg.exposure_floor)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, bf16):
                outputs = model(x)
            target = torch.from_numpy(batch.labels).to(device)
            loss = segmentation_loss(
                tuple(o.float() for o in outputs), target, cfg.loss, _may_hide(batch.unlabelled, num_classes, device)
            )
            if teacher:
                loss = loss + teacher.loss(images, outputs[0].float(), target, batch.sources, bf16)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average:
                average.update(model)
            state.epoch_losses.append(loss.item())
            state.step += 1
            if (cfg.state_steps and state.step % cfg.state_steps == 0) or (
                time.monotonic() - saved_at >= 60 * cfg.state_minutes
            ):
                save()
        validating = time.perf_counter()
        val = validate(scored_model, data, mean, std, device, params)
        record = EpochRecord(
            epoch=epoch,
            loss=float(np.mean(state.epoch_losses)),
            lr=_lr(cfg, epoch * spe - 1, total_steps),
            val_miou=val.miou,
            val_fg_iou=val.fg_iou,
            val_fg_f1=val.fg_f1,
            val_fg_tol_f1=val.fg_tol_f1,
            val_score=val.score,
            set_scores={name: s.score for name, s in val.sets.items()},
            thresholds=dict(val.thresholds),
            seconds=time.perf_counter() - started,
            val_seconds=time.perf_counter() - validating,
        )
        state.history.append(record.flat())  # flat in the saved state: a resume reads it back
        state.epoch_losses = []
        score = -1.0 if np.isnan(val.score) else val.score
        if state.best_state is None or score > state.best_score:
            state.best_score, best_metrics = score, val.model_copy(update={"epoch": epoch})
            state.best_metrics = best_metrics.model_dump(mode="json")
            state.best_state = {k: v.detach().cpu().clone() for k, v in scored_model.state_dict().items()}
        save()
        if on_epoch:
            on_epoch(record)

    if state.best_state is None or best_metrics is None:
        raise MsafError("train.epochs must be at least 1")
    history = state.history
    model.load_state_dict(state.best_state)
    metadata = ModelMetadata(
        preset=params.model.preset,
        architecture=network_config(model),
        classes=params.data.classes,
        tile_size=cfg.crop_size,
        mean=mean,
        std=std,
        gsd_m=params.data.gsd_m,
        exposure_floor=cfg.exposure_floor,
        thresholds=best_metrics.thresholds,
        metrics={"val": best_metrics.to_json()},
        data_fingerprint=data.fingerprint,
        history=[{k: v for k, v in r.items() if k not in TIMINGS} for r in history],
        weights_sha256=weights_sha256(model),
        split={
            "train": [n for s in data.manifest.sets for n in s.train],
            "val": [n for s in data.manifest.sets for n in s.val],
        },
        data_sets={  # what the model learnt from: a geo set names its label set (msaf labels) too
            s.name: {"train": s.train, "val": s.val, "fingerprint": s.fingerprint, "gsd_m": s.gsd_m}
            | ({"kind": "geo", "labelset": str(s.labelset)} if s.kind == "geo" else {})
            for s in data.manifest.sets
        },
        params=params.recorded(),
    )
    tolerance = params.evaluate.tolerance_px
    metadata = with_view_calibrations(model, metadata, data.val_sets, cfg.calibrate_scales, tolerance)
    sha = save_checkpoint(out, model, metadata)
    discard_state(folder)
    return TrainResult(out, sha, metadata, [EpochRecord.from_flat(r) for r in history], best_metrics)
