"""Model families: a network architecture is a shape config, a network class and named presets.

The one owner of preset names (params.yaml's ``model.preset`` and every checkpoint's ``preset`` are
resolved here). A second architecture is a new module - its torch-free config and presets, its
network class taking that config and returning ``(main, *aux)`` logits in training mode and the
main logits in eval mode, with the config as ``.config`` - plus one entry in ``FAMILIES``. Network
classes are imported on first build, so resolving settings never loads torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

from pipeline.model.presets import DSNET_PRESETS, DSNetConfig, NetworkConfig

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelFamily:
    """One architecture: its shape config type, its network class ("module:Class") and presets."""

    name: str
    config: type[NetworkConfig]
    network: str
    presets: Mapping[str, NetworkConfig]

    def resolve(self, preset: str, num_classes: int, **overrides: object) -> NetworkConfig:
        """Preset + class count + field overrides -> validated config (clear error on a bad name)."""
        fields = self.presets[preset].model_dump()
        unknown = set(overrides) - set(fields)
        if unknown:
            raise ValueError(f"unknown model override(s) {sorted(unknown)}; valid: {', '.join(fields)}")
        return self.config(**{**fields, **overrides, "num_classes": num_classes})

    def build(self, config: NetworkConfig) -> torch.nn.Module:
        """The network of this family with ``config`` (imports the network module, and torch)."""
        module, _, name = self.network.partition(":")
        network: Any = getattr(import_module(module), name)
        return network(self.config.model_validate(config))


FAMILIES: dict[str, ModelFamily] = {
    "dsnet": ModelFamily("dsnet", DSNetConfig, "pipeline.model.dsnet:DSNet", DSNET_PRESETS),
}
PRESETS: dict[str, NetworkConfig] = {name: cfg for f in FAMILIES.values() for name, cfg in f.presets.items()}


def network_config(model: torch.nn.Module) -> NetworkConfig:
    """The shape config a network of any family was built with (its ``.config``)."""
    config = getattr(model, "config", None)
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"{type(model).__name__} is not a network of a registered family (no .config)")
    return config


def family_of(preset: str) -> ModelFamily:
    """The family a preset name belongs to; a ValueError naming the known presets otherwise."""
    for family in FAMILIES.values():
        if preset in family.presets:
            return family
    raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")


def resolve_config(preset: str, num_classes: int, **overrides: object) -> NetworkConfig:
    """The shape config of ``preset`` with ``num_classes`` outputs and field overrides."""
    return family_of(preset).resolve(preset, num_classes, **overrides)


def build_model(preset: str, num_classes: int, **overrides: object) -> torch.nn.Module:
    """Build a network from a named preset, e.g. ``build_model("dsnet", 2)``."""
    family = family_of(preset)
    return family.build(family.resolve(preset, num_classes, **overrides))
