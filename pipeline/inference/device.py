"""Device and precision selection, with a clear error when what is asked for is absent.

PyTorch is imported where it is needed (1.3 s): ``check_device_name`` judges a device name from
the installed PyTorch's package metadata alone, so the CLI refuses an impossible one at once."""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Literal

from pipeline.config import Precision
from pipeline.errors import MsafError

if TYPE_CHECKING:
    import torch


def cpu_only_torch() -> str | None:
    """The installed PyTorch's version when it is a CPU-only build (its wheels say so: ``+cpu``)."""
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None
    return version if version.endswith("+cpu") else None


def check_device_name(name: str) -> None:
    """A device name this install may have (auto, cpu, cuda[:N]), without importing PyTorch: an unknown
    name, or cuda with a CPU-only build of PyTorch, is a user error."""
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        raise MsafError(f"unknown device {name!r}; use auto, cpu or cuda")
    if name.startswith("cuda") and (build := cpu_only_torch()):
        raise MsafError(
            f"--device {name} asked for, but the installed PyTorch ({build}) is a CPU-only build; use --device"
            " cpu or auto, or install a CUDA build of PyTorch (README, Quick start)"
        )


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is a user error."""
    import torch

    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MsafError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """AVX512_BF16 or AMX: oneDNN then runs bf16 convolutions in hardware (twice the fp32 rate on this
    project's 2-core EPYC); without them bf16 is emulated, slower than fp32."""
    import torch

    capabilities = (
        getattr(torch.cpu, "_is_avx512_bf16_supported", None),
        getattr(torch.cpu, "_is_amx_tile_supported", None),
    )
    return any(check is not None and check() for check in capabilities)


def resolve_precision(precision: Precision, device: torch.device) -> Literal["fp32", "bf16"]:
    """The network's arithmetic: auto is bf16 on CUDA and fp32 on a CPU; bf16 on a CPU without native
    bf16 is a user error (it would be slower than fp32, not faster)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise MsafError(
            "survey.precision bf16 asked for, but this CPU has no native bf16 (AVX512_BF16 or AMX) and would"
            " run slower than fp32; use precision fp32 or auto (msaf doctor shows what the machine has)"
        )
    return precision
