"""Element-wise work on every core this process may use, in threads.

Shapely's vectorised operations release the GIL, so an array cut into chunks, each in a thread of
its own, gives exactly one call's result (element by element: the same bytes) in a fraction of its
time. A comparison at bridge scale spends most of its time buffering and cutting tens of thousands
of centreline pieces (``pipeline.report.change_matching``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

MIN_PER_THREAD = 2000  # elements: below this, a thread costs about what it saves


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threaded(operation: Callable[..., np.ndarray], *arrays: np.ndarray, **options: Any) -> np.ndarray:
    """``operation(*arrays, **options)``, element-wise over equally long arrays, computed in chunks on
    the usable cores (one call where the arrays are short or there is one core)."""
    count = len(arrays[0])
    workers = min(usable_cores(), count // MIN_PER_THREAD)
    if workers < 2:
        return operation(*arrays, **options)
    cuts = np.linspace(0, count, workers + 1).astype(int)

    def chunk(k: int) -> np.ndarray:
        return operation(*(array[cuts[k] : cuts[k + 1]] for array in arrays), **options)

    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(chunk, range(workers))))
