"""How the engine gets its block-sized memory: buffers lent out and given back, and small pages.

Fresh memory is paid for at first touch, page by page: the kernel zeroes it, and on a virtual
machine the host may first have to back it again. NumPy asks for transparent huge pages (2 MB) for
every array of 4 MB or more; on the project's 2-vCPU machine (AMD EPYC, KVM) each of those cost 1.6
ms to fault in on one core and ~7 ms with two workers, erratically (our reading: the VM hands its
free 2 MB blocks back to its host, so a huge page is faulted in on the host too). A 16384²
engine-only survey spent 1.7-6 s of kernel time on them with two workers, against ~1 s in small
pages; the engine with both changes here ran 42.0-45.9 Mpix/s on two cores where the code before
ran 35.3-36.7 in the same hour (README, "Memory touched once, in small pages").
"""

from __future__ import annotations

import importlib
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class BufferPool:
    """Flat uint8 buffers of at least a requested size (and of ``smallest``, when made); at most
    ``keep`` wait between uses. A
    block's pixels and footprint (4 bytes a pixel, 69 MB for a 4096² block with its halo) were a
    new array per block, touched afresh; a buffer that comes back is touched once per survey.

    Memory stays flat: a buffer only comes back to wait once its user is done with it, so the pool
    holds no more than the most blocks ever in flight at once (what fresh arrays peaked at too).
    """

    def __init__(self, keep: int = 8, smallest: int = 0) -> None:
        self.keep = keep
        self.smallest = smallest  # no buffer is made smaller: one size for requests of many
        self._free: list[np.ndarray] = []
        # id -> buffer, only to know this pool's own when they come back: weakly, so a buffer whose
        # user drops it without giving it back is freed as before, not held here
        self._lent: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        """A buffer of ``nbytes``: the smallest waiting one that holds it, else a new one (the
        smallest waiting one then goes, to make room)."""
        with self._lock:
            by_size = sorted(range(len(self._free)), key=lambda i: self._free[i].size)
            fitting = [i for i in by_size if self._free[i].size >= nbytes]
            if fitting:
                buffer = self._free.pop(fitting[0])
            else:
                if by_size:
                    del self._free[by_size[0]]
                buffer = np.empty(max(nbytes, self.smallest), np.uint8)
            self._lent[id(buffer)] = buffer
        return buffer[:nbytes]

    def give_back(self, view: np.ndarray) -> bool:
        """Take back the buffer ``view`` was cut from (any view of what ``take`` gave); False when it
        is not one of this pool's. The caller must not use the view afterwards."""
        base = view.base if view.base is not None else view
        with self._lock:
            buffer = self._lent.pop(id(base), None)
            if buffer is None:
                return False
            if len(self._free) < self.keep:
                self._free.append(buffer)
        return True

    @property
    def waiting(self) -> int:
        """Buffers waiting to be lent again."""
        with self._lock:
            return len(self._free)


_PAGES_LOCK = threading.Lock()
_PAGES_USERS = 0
_PAGES_BEFORE = True


def _set_huge_pages(enabled: bool) -> bool:
    """NumPy's huge-page advice for its large arrays on or off; returns what it was (True where
    this NumPy has no such switch: then nothing changes)."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):  # NumPy 2, NumPy 1.26
        try:
            switch = getattr(importlib.import_module(module), "_set_madvise_hugepage", None)
        except ImportError:
            continue
        if switch is not None:
            return bool(switch(enabled))
    return True


@contextmanager
def small_pages() -> Iterator[None]:
    """NumPy's new arrays in small pages while the engine runs (nested and concurrent uses share
    one switch: the last to leave puts back what was there). A ``NUMPY_MADVISE_HUGEPAGE`` the user
    set is theirs and left as it is."""
    global _PAGES_USERS, _PAGES_BEFORE
    chosen = "NUMPY_MADVISE_HUGEPAGE" in os.environ
    with _PAGES_LOCK:
        if not chosen:
            if _PAGES_USERS == 0:
                _PAGES_BEFORE = _set_huge_pages(False)
            _PAGES_USERS += 1
    try:
        yield
    finally:
        if not chosen:
            with _PAGES_LOCK:
                _PAGES_USERS -= 1
                if _PAGES_USERS == 0:
                    _set_huge_pages(_PAGES_BEFORE)
