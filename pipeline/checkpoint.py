"""Checkpoint format: safetensors weights with the model's JSON metadata in the file header.

One file holds everything needed to rebuild and use a model; loading never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import pipeline
from pipeline.config import ClassSpec
from pipeline.errors import MsafError, first_problem
from pipeline.fsutil import atomic_output, file_digest
from pipeline.inference.decision import threshold_ids
from pipeline.inference.scales import SINGLE, Scales, parse_scales, scales_key
from pipeline.metrics.summary import EvaluationSummary
from pipeline.model.families import family_of
from pipeline.model.presets import NetworkConfig
from pipeline.timestamps import creation_time

METADATA_KEY = "msaf"
FORMAT_VERSION = 1


def weights_sha256(model: torch.nn.Module) -> str:
    """Hash of every tensor of the state dict (names, dtypes, shapes, bytes) in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        raw = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor  # numpy has no bf16
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()


class ModelMetadata(BaseModel):
    """What a survey needs to use a model correctly, and what makes it traceable."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    name: str = "msaf-defects"
    preset: str  # names the family (pipeline.model.families) whose config ``architecture`` is
    architecture: SerializeAsAny[NetworkConfig]
    classes: list[ClassSpec]
    tile_size: int = Field(ge=16, le=8192, description="training crop size; surveys infer at this scale")
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    gsd_m: float | None = None
    exposure_floor: float = Field(
        0.0,
        ge=0.0,
        le=255.0,
        description="tiles darker than this mean luminance (0-255) are brightened to it before the network"
        " (pipeline.inference.predict.lift_shadows); chosen by measurement for this model; 0: none",
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="calibrated decision thresholds (pipeline.inference.decision)"
    )
    scale_thresholds: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="thresholds calibrated for multi-scale surveys, by their views (scales_key: '1,2')",
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    data_fingerprint: str | None = None
    software_version: str = pipeline.__version__
    created_utc: str = Field(default_factory=lambda: creation_time())

    @field_validator("architecture", mode="before")
    @classmethod
    def _family_config(cls, value: Any, info: ValidationInfo) -> Any:
        """The architecture as its family's config (the family is the preset's)."""
        preset = info.data.get("preset")
        if preset is None or isinstance(value, NetworkConfig):
            return value
        return family_of(preset).config.model_validate(value)

    @field_validator("mean")
    @classmethod
    def _finite_mean(cls, mean: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(m) for m in mean):
            raise ValueError(f"the input mean must be finite, got {list(mean)}")
        return mean

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(v) and v > 0 for v in std):
            raise ValueError(f"the input std must be finite and above 0, got {list(std)}")
        return std

    @field_validator("thresholds")
    @classmethod
    def _probabilities(cls, thresholds: dict[str, float]) -> dict[str, float]:
        return _probabilities(thresholds)

    @field_validator("scale_thresholds")
    @classmethod
    def _views_and_probabilities(cls, by_views: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for key, thresholds in by_views.items():
            if scales_key(parse_scales(key)) != key:
                raise ValueError(f"scale thresholds are keyed by sorted scales such as '1,2', got {key!r}")
            _probabilities(thresholds)
        return by_views

    @model_validator(mode="after")
    def _classes_fit_the_network(self) -> ModelMetadata:
        """Names unique and one per network output, thresholds only for those names: a survey
        would otherwise count one class's pixels as another's, or fail after the whole inference."""
        names = self.class_names
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"class names must be unique, {duplicates[0]!r} is listed twice")
        if len(names) != self.architecture.num_classes:
            raise ValueError(f"{len(names)} class names for a network with {self.architecture.num_classes} outputs")
        unknown = sorted(set(self.thresholds).union(*self.scale_thresholds.values()) - set(names))
        if unknown:
            raise ValueError(f"a threshold for {unknown[0]!r}, which is not one of the classes {names}")
        return self

    @property
    def class_names(self) -> list[str]:
        """Class names in class-id order."""
        return [c.name for c in self.classes]

    def validation(self) -> EvaluationSummary | None:
        """The validation summary the model was selected by; None for a checkpoint without one
        (or one from a release whose summary had another shape)."""
        try:
            return EvaluationSummary.model_validate(self.metrics["val"]) if "val" in self.metrics else None
        except ValidationError:
            return None

    @property
    def decision(self) -> list[tuple[int, float]]:
        """The calibrated thresholds as (class id, threshold) for ``decide``."""
        return threshold_ids(self.class_names, self.thresholds)

    def calibrated_for(self, scales: Scales) -> bool:
        """Whether the model holds thresholds calibrated for a survey with these views (a multi-scale
        mean is less sure of thin cracks than one view: its best crack threshold is lower, 0.4
        against 0.5 for the shipped model's (1, 2))."""
        return tuple(scales) == SINGLE or scales_key(scales) in self.scale_thresholds

    def thresholds_at(self, scales: Scales) -> dict[str, float]:
        """The thresholds a survey with these views decides by: calibrated for them, else the single view's."""
        if tuple(scales) == SINGLE:
            return self.thresholds
        return self.scale_thresholds.get(scales_key(scales), self.thresholds)

    def decision_for(self, scales: Scales) -> list[tuple[int, float]]:
        """``decide``'s rule for a survey with these views (``thresholds_at``)."""
        return threshold_ids(self.class_names, self.thresholds_at(scales))


def _probabilities(thresholds: dict[str, float]) -> dict[str, float]:
    for name, value in thresholds.items():
        if not (math.isfinite(value) and 0.0 < value < 1.0):
            raise ValueError(f"the {name} threshold must be a probability in (0, 1), got {value}")
    return thresholds


def save_checkpoint(path: str | Path, model: torch.nn.Module, metadata: ModelMetadata, *, half: bool = False) -> str:
    """Write weights + metadata atomically; returns the file's SHA-256.

    Args:
        half: store floating-point tensors as fp16 (half the size; loads back as fp32).
    """
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        tensors[name] = tensor.half() if half and tensor.is_floating_point() else tensor
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: metadata.model_dump_json()})
    return file_sha256(path)


def save_metadata(source: str | Path, out: str | Path, metadata: ModelMetadata) -> str:
    """A copy of ``source`` with other metadata and its tensors exactly as stored (an fp16 file stays
    fp16, the weights' hash stays valid); returns the copy's SHA-256. ``out`` may be ``source``."""
    check_weights(source, metadata)
    try:
        tensors = load_file(str(source), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise MsafError(f"{source}: corrupt model weights ({exc}); re-download or retrain") from None
    with atomic_output(out) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: metadata.model_dump_json()})
    return file_sha256(out)


def file_sha256(path: str | Path) -> str:
    """Content hash used to identify a model file in provenance records."""
    return file_digest(path, "sha256")


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read only the metadata header (cheap: no weights are loaded)."""
    path = Path(path)
    if not path.is_file():
        raise MsafError(f"model file not found: {path}; train one with `msaf train` or pass --model")
    try:
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if not 0 < header_len < 100_000_000:
                raise ValueError("bad header length")
            header = json.loads(fh.read(header_len))
        raw = json.loads(header["__metadata__"][METADATA_KEY])
        if not isinstance(raw, dict):
            raise TypeError("metadata is not an object")
    except (ValueError, KeyError, TypeError):
        raise MsafError(f"{path}: not an msaf model checkpoint (expected safetensors with msaf metadata)") from None
    version = raw.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise MsafError(
            f"{path}: checkpoint format {version!r} is not one this msaf {pipeline.__version__} reads "
            f"(1-{FORMAT_VERSION}); upgrade msaf-pipeline or re-export the model"
        )
    try:
        return ModelMetadata.model_validate(raw)
    except ValidationError as exc:
        raise MsafError(
            f"{path}: invalid model metadata ({first_problem(exc)}); re-export or retrain the model"
        ) from None


def check_weights(path: str | Path, metadata: ModelMetadata) -> None:
    """The stored tensors match the architecture the metadata names (names and shapes; no weights loaded)."""
    from safetensors import safe_open

    expected = _architecture_shapes(metadata)
    try:
        with safe_open(str(path), framework="pt") as fh:
            stored = {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise MsafError(f"{path}: corrupt model weights ({exc}); re-download or retrain") from None
    missing, unexpected = expected.keys() - stored.keys(), stored.keys() - expected.keys()
    wrong = sorted(k for k in expected.keys() & stored.keys() if expected[k] != stored[k])
    if missing or unexpected or wrong:
        detail = (
            f"{wrong[0]} is {stored[wrong[0]]}, expected {expected[wrong[0]]}"
            if wrong
            else f"{len(missing)} missing, {len(unexpected)} unexpected tensors"
        )
        raise MsafError(
            f"{path}: weights do not match the architecture in its metadata ({detail}); the file was "
            "edited or mixed from two models - re-export it"
        )


_SHAPES: dict[tuple[str, str], dict[str, tuple[int, ...]]] = {}


def _architecture_shapes(metadata: ModelMetadata) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of the network the metadata describes, built once per architecture in
    a process: building one costs ~0.1 s, and a survey checks the weights when it validates the
    model and again when it loads it."""
    key = (metadata.preset, metadata.architecture.model_dump_json())
    if key not in _SHAPES:
        _SHAPES[key] = {name: tuple(t.shape) for name, t in build_network(metadata).state_dict().items()}
    return _SHAPES[key]


def build_network(metadata: ModelMetadata) -> torch.nn.Module:
    """The untrained network a checkpoint's metadata describes (its preset's family, its config)."""
    return family_of(metadata.preset).build(metadata.architecture)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelMetadata]:
    """Rebuild the network from the metadata and load its weights; returns the model in eval mode."""
    metadata = read_metadata(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise MsafError(f"{path}: corrupt model weights ({exc}); re-download or retrain") from None
    check_weights(path, metadata)
    model = build_network(metadata)
    expected = model.state_dict()
    tensors = {k: v.to(expected[k].dtype) for k, v in tensors.items()}
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), metadata
