"""The full training state on disk, so a stopped training continues where it was.

Weights, EMA, optimizer moments, the RNG, the step reached, the epoch's losses so far, the history
and the best epoch so far are written atomically (safetensors for tensors, nothing pickled).
A state is reused only when its key - a hash of everything that shapes the training (params, data
fingerprint, initial weights) - matches, so a changed param starts afresh instead of mixing runs.
Batches are drawn per step from (seed, step), so a resumed run sees exactly the batches an
uninterrupted one would, and ends with byte-identical weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pipeline.config import Params
from pipeline.fsutil import atomic_output

STATE_FORMAT = 1
TENSORS = "state.safetensors"


def state_dir_for(out: Path) -> Path:
    """Where the training that writes ``out`` keeps its resumable state (beside it, not a DVC output)."""
    return out.parent / f"{out.stem}.train-state"


def resume_key(
    params: Params, data_fingerprint: str, init_sha256: str | None, teacher_sha256: str | None = None
) -> str:
    """Hash of what determines the training's course; bookkeeping settings (where to write, how often
    to save) are left out so changing them keeps the state. Weights count by content, not path."""
    shaping = params.model_dump(mode="json", include=set(params.TRAINING_SECTIONS))
    for key in ("out", "state_minutes", "state_steps", "init"):
        shaping["train"].pop(key, None)
    shaping["train"]["distill"].pop("teacher", None)
    for spec in shaping["data"]["sets"]:  # where the files sit is not what they are: the fingerprint is
        for key in ("images", "masks", "labelset"):
            spec.pop(key, None)
    shaping["data"].pop("images", None)
    shaping["data"].pop("masks", None)
    blob = json.dumps([STATE_FORMAT, shaping, data_fingerprint, init_sha256, teacher_sha256], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class TrainingState:
    """Everything a training needs to continue; ``step`` is the next optimizer step to take."""

    key: str
    step: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = -1.0
    best_metrics: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    ema_steps: int = 0


def _split(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}


def save_state(
    folder: Path,
    state: TrainingState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None,
) -> None:
    """Write the state atomically (a kill during the write leaves the previous state intact)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        tensors[f"model.{name}"] = t.detach().cpu().contiguous()
    if ema is not None:
        for name, t in ema.state_dict().items():
            tensors[f"ema.{name}"] = t.detach().cpu().contiguous()
    for name, t in (state.best_state or {}).items():
        tensors[f"best.{name}"] = t.detach().cpu().contiguous()
    optim = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in optim["state"].items():
        for slot, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{slot}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[slot] = value
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "format": STATE_FORMAT,
        "key": state.key,
        "step": state.step,
        "epoch_losses": state.epoch_losses,
        "history": state.history,
        "best_score": state.best_score,
        "best_metrics": state.best_metrics,
        "ema_steps": state.ema_steps,
        "optim_groups": optim["param_groups"],
        "optim_scalars": scalars,
    }
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_output(folder / TENSORS) as tmp:
        save_file(tensors, str(tmp), metadata={"msaf_train_state": json.dumps(meta)})


def load_state(
    folder: Path,
    key: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None,
) -> TrainingState | None:
    """The saved state when it belongs to this training (same key), loaded into the given objects;
    None when there is none, it is damaged or it is another training's (then it is set aside)."""
    path = folder / TENSORS
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        meta = json.loads(header["__metadata__"]["msaf_train_state"])
        if meta.get("format") != STATE_FORMAT or meta.get("key") != key:
            return None
        tensors = load_file(str(path))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):
        return None
    model.load_state_dict(_split("model.", tensors))
    if ema is not None:
        ema.load_state_dict(_split("ema.", tensors))
    optim_state: dict[int, dict[str, Any]] = {}
    for name, t in _split("optim.", tensors).items():
        index, slot = name.split(".", 1)
        optim_state.setdefault(int(index), {})[slot] = t
    for index, slots in meta["optim_scalars"].items():
        optim_state.setdefault(int(index), {}).update(slots)
    optimizer.load_state_dict({"state": optim_state, "param_groups": meta["optim_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    best = _split("best.", tensors)
    return TrainingState(
        key=key,
        step=int(meta["step"]),
        epoch_losses=[float(v) for v in meta["epoch_losses"]],
        history=list(meta["history"]),
        best_score=float(meta["best_score"]),
        best_metrics=meta["best_metrics"],
        best_state=best or None,
        ema_steps=int(meta["ema_steps"]),
    )


def discard_state(folder: Path) -> None:
    """Remove a finished training's state (the checkpoint is the result now)."""
    shutil.rmtree(folder, ignore_errors=True)
