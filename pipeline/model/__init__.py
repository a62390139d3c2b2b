"""The MSAF module, the DSNet-style segmentation network and the registry of model families.

Network classes load torch on first use (PEP 562), so the presets and families - what settings and
checkpoints are resolved against - stay light for commands that never build a network.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from pipeline.model.families import FAMILIES, PRESETS, ModelFamily, build_model, family_of, resolve_config
from pipeline.model.presets import DSNetConfig, NetworkConfig

if TYPE_CHECKING:
    from pipeline.model.dsnet import DSNet, count_parameters
    from pipeline.model.msaf import MSAF

_LAZY = {
    "MSAF": "pipeline.model.msaf",
    "DSNet": "pipeline.model.dsnet",
    "count_parameters": "pipeline.model.dsnet",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline.model' has no attribute {name!r}")


__all__ = [
    "FAMILIES",
    "MSAF",
    "PRESETS",
    "DSNet",
    "DSNetConfig",
    "ModelFamily",
    "NetworkConfig",
    "build_model",
    "count_parameters",
    "family_of",
    "resolve_config",
]
