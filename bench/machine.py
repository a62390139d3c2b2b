"""What machine a bench ran on, written beside its numbers: the same code measured 1.3-1.5x apart on
two days of this project's CPU machines, so numbers from different machines are not comparable."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict[str, object]:
    """CPU model and family (x86 ``/proc/cpuinfo``), the cores this process may use, Python and torch."""
    import torch

    cpu: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            cpu.setdefault(key, value)
    except OSError:  # not Linux
        pass
    return {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_family": cpu.get("cpu family"),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
