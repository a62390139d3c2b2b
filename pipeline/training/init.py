"""Start a training from existing weights (fine-tuning), tensor by tensor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.checkpoint import ModelMetadata, file_sha256, read_metadata


@dataclass(frozen=True)
class InitReport:
    """What a fine-tuning start took over from the source weights."""

    source: Path
    sha256: str
    metadata: ModelMetadata
    loaded: int  # tensors copied
    fresh: list[str]  # tensors of the new network that start from their random init (new or reshaped)


def load_initial_weights(model: torch.nn.Module, source: Path) -> InitReport:
    """Copy every tensor of ``source`` whose name and shape match into ``model``; the rest of the
    model keeps its fresh initialisation (a new head, another class count, a new branch).

    The file is read as safetensors (never unpickled) and its metadata validated like any model's.
    """
    from safetensors.torch import load_file

    metadata = read_metadata(source)
    stored = load_file(str(source), device="cpu")
    target = model.state_dict()
    fresh = sorted(name for name, t in target.items() if name not in stored or stored[name].shape != t.shape)
    taken = {name: stored[name].to(t.dtype) for name, t in target.items() if name not in fresh}
    model.load_state_dict(taken, strict=False)
    return InitReport(Path(source), file_sha256(source), metadata, len(taken), fresh)


def resolve_init(spec: str, registry_name: str, registry_alias: str) -> Path | None:
    """``train.init`` as a checkpoint path: ``none`` -> None, ``champion`` -> the registry's champion
    (the shipped model in a fresh store), else the path itself (which must be a model file)."""
    from pipeline.errors import MsafError

    if spec == "none":
        return None
    if spec == "champion":
        from pipeline.tracking.registry import resolve_default_model
        from pipeline.tracking.store import init_tracking

        init_tracking()
        return resolve_default_model(registry_name, registry_alias)[0]
    path = Path(spec)
    if not path.is_file():
        raise MsafError(f"train.init: no model file at {path}; give a checkpoint path, `champion` or `none`")
    return path
