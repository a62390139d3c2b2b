"""The MSAF module and the DSNet-style segmentation network.

The network classes load torch on first use (PEP 562), so ``pipeline.model.presets`` - what the
settings are checked against - stays light for commands that never build a network.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from pipeline.model.presets import PRESETS, DSNetConfig

if TYPE_CHECKING:
    from pipeline.model.dsnet import DSNet, build_model, count_parameters, resolve_config
    from pipeline.model.msaf import MSAF

_LAZY = {
    "MSAF": "pipeline.model.msaf",
    "DSNet": "pipeline.model.dsnet",
    "build_model": "pipeline.model.dsnet",
    "count_parameters": "pipeline.model.dsnet",
    "resolve_config": "pipeline.model.dsnet",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline.model' has no attribute {name!r}")


__all__ = ["MSAF", "PRESETS", "DSNet", "DSNetConfig", "build_model", "count_parameters", "resolve_config"]
