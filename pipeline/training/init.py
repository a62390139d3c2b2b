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


def class_slots(model: torch.nn.Module) -> dict[str, int]:
    """Tensors whose leading slots along one dimension are the classes, with that dimension: the
    class-logit convolutions (output rows) and the refinement branch's fusion (its first inputs
    are the upsampled logits)."""
    from pipeline.model.blocks import FullResRefiner, SegHead

    slots: dict[str, int] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, SegHead):
            last = len(module.body) - 1
            slots |= {f"{prefix}.body.{last}.weight": 0, f"{prefix}.body.{last}.bias": 0}
        elif isinstance(module, FullResRefiner):
            slots |= {f"{prefix}.out.weight": 0, f"{prefix}.out.bias": 0, f"{prefix}.fuse.0.weight": 1}
    return slots


def load_initial_weights(model: torch.nn.Module, source: Path, class_names: list[str] | None = None) -> InitReport:
    """Copy every tensor of ``source`` whose name and shape match into ``model``; the rest of the
    model keeps its fresh initialisation (a new branch, a reshaped layer).

    With ``class_names`` (the new model's classes) the class-indexed slots of the heads are matched
    by class name: a class both know keeps its weights wherever it now stands, a new class starts
    fresh, a dropped one is left out. The file is read as safetensors (never unpickled) and its
    metadata validated like any model's.
    """
    from safetensors.torch import load_file

    metadata = read_metadata(source)
    stored = load_file(str(source), device="cpu")
    target = model.state_dict()
    old_names = metadata.class_names
    by_name = class_names is not None and class_names != old_names
    slots = class_slots(model) if by_name else {}
    taken: dict[str, torch.Tensor] = {}
    fresh = []
    for name, tensor in target.items():
        if name in slots and name in stored:
            merged = _by_class(stored[name], tensor, slots[name], old_names, class_names or old_names)
            if merged is not None:
                taken[name] = merged
                if any(c not in old_names for c in class_names or ()):
                    fresh.append(name)  # partly: the new classes' slots
                continue
        if name in stored and stored[name].shape == tensor.shape:
            taken[name] = stored[name].to(tensor.dtype)
        else:
            fresh.append(name)
    model.load_state_dict(taken, strict=False)
    return InitReport(Path(source), file_sha256(source), metadata, len(taken), sorted(fresh))


def _by_class(
    old: torch.Tensor, new: torch.Tensor, dim: int, old_names: list[str], new_names: list[str]
) -> torch.Tensor | None:
    """``new`` (its fresh values) with the slots of classes both know copied from ``old`` along
    ``dim``; None when the tensors differ in anything but the class slots."""
    extra_old, extra_new = old.shape[dim] - len(old_names), new.shape[dim] - len(new_names)
    other_dims = [i for i in range(old.dim()) if i != dim]
    if old.dim() != new.dim() or extra_old != extra_new or any(old.shape[i] != new.shape[i] for i in other_dims):
        return None
    merged = new.clone()
    for index, name in enumerate(new_names):
        if name in old_names:
            merged.select(dim, index).copy_(old.select(dim, old_names.index(name)).to(new.dtype))
    if extra_new:  # slots after the classes (the refinement's image features) keep their places
        merged.narrow(dim, len(new_names), extra_new).copy_(old.narrow(dim, len(old_names), extra_old).to(new.dtype))
    return merged


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
