"""Device selection with a clear error when CUDA is asked for but absent."""

from __future__ import annotations

import torch

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
