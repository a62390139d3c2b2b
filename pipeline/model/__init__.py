"""The MSAF module and the DSNet-style segmentation network."""

from pipeline.model.dsnet import PRESETS, DSNet, DSNetConfig, build_model, count_parameters, resolve_config
from pipeline.model.msaf import MSAF

__all__ = ["MSAF", "PRESETS", "DSNet", "DSNetConfig", "build_model", "count_parameters", "resolve_config"]
