"""What machine a bench ran on, written beside its numbers: the same code measured 1.3-1.5x apart on
two days of this project's CPU machines, so numbers from different machines are not comparable."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


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


KERNELS = {"in cache": 128 << 10, "streaming": 16 << 20}  # bytes per array (two per process)


def core_scaling(cores: list[int], seconds: float = 0.15, rounds: int = 3) -> dict[str, dict[int, float]]:
    """How much more work ``n`` cores do than one (for each ``n`` of ``cores``), measured now: ``n``
    processes, one pinned to each core, all adding one float32 array into another at once, their
    summed rate over one process's alone (the better of one measured just before and just after:
    a neighbour's burst during the one-core run alone would inflate the ratio), the median of
    ``rounds`` alternating rounds (a shared machine's memory rate moved 2x from one quarter second to
    the next here; 4.7 s for 1 and 2 cores, an estimated ~19 s for 4, 8 and 16 within gpu_check's
    engine step). Two array sizes bound
    what an engine can get: arrays that stay in a core's own cache (the cores' arithmetic: ~n on
    real cores), and arrays far larger than a core's share of the last-level cache (the memory the
    cores share). An engine's own speed-up is read against these."""
    available = sorted(os.sched_getaffinity(0))
    counts = [n for n in sorted(set(cores)) if 1 < n <= len(available)]
    result: dict[str, dict[int, float]] = {}
    for name, size in KERNELS.items():
        ratios: dict[int, list[float]] = {n: [] for n in counts}
        for _ in range(rounds):
            for n in counts:
                before = _summed_rate(available[:1], size, seconds)
                together = _summed_rate(available[:n], size, seconds)
                one = max(before, _summed_rate(available[:1], size, seconds))  # a busy moment lowers one of them
                ratios[n].append(together / one)
        result[name] = {1: 1.0} | {n: sorted(values)[len(values) // 2] for n, values in ratios.items()}
    return result


def _summed_rate(pinned: list[int], size: int, seconds: float) -> float:
    """Bytes per second moved by one process per core in ``pinned``, all started together."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    start, rates = context.Barrier(len(pinned)), context.Queue()
    workers = [context.Process(target=_add_arrays, args=(core, size, seconds, start, rates)) for core in pinned]
    for worker in workers:
        worker.start()
    try:
        return sum(rates.get(timeout=60) for _ in workers)
    finally:
        for worker in workers:
            worker.join()


def _add_arrays(core: int, size: int, seconds: float, start: Any, rates: Any) -> None:
    """In a process pinned to ``core``: ``a += b`` repeated for ``seconds``; bytes moved per second."""
    import time

    import numpy as np

    os.sched_setaffinity(0, {core})
    a, b = np.ones(size // 4, np.float32), np.ones(size // 4, np.float32)
    np.add(a, b, out=a)  # pages faulted in before the clock starts
    start.wait()
    began, done = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - began) < seconds:
        np.add(a, b, out=a)
        done += 1
    rates.put(3 * size * done / elapsed)  # two arrays read, one written
