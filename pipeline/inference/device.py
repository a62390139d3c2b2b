"""Device and precision selection, with a clear error when what is asked for is absent."""

from __future__ import annotations

from typing import Literal

import torch

from pipeline.config import Precision
from pipeline.errors import MsafError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MsafError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise MsafError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """AVX512_BF16 or AMX: oneDNN then runs bf16 convolutions in hardware (twice the fp32 rate on this
    project's 2-core EPYC); without them bf16 is emulated, slower than fp32."""
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
