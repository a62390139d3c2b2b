"""Work that holds the GIL, on every core: worker processes, results in the order of the work.

Measuring a crack is hundreds of small numpy, scipy and shapely calls; threads take turns on the
GIL and gain nothing on it (measured: 2 threads 7.6 s against 7.5 s serial for 1028 cracks), while
two processes take 4.6 s. The workers are joblib's (loky): fresh interpreters, kept for the next
call, that neither fork a process whose other threads may hold a lock (GDAL, Prefect, torch) nor
run the caller's script again (the standard library's spawn and forkserver do both without a
``__main__`` guard).
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Generic, Literal, TypeVar

from joblib import Parallel, delayed

from pipeline.threads import usable_cores

Item = TypeVar("Item")
Result = TypeVar("Result")


def process_count(requested: int | Literal["auto"]) -> int:
    """Worker processes to use: ``requested``, or with auto one per usable core; 1 (this process)
    in a daemonic process (a Dask worker, a multiprocessing pool's worker), which may not have children."""
    if multiprocessing.current_process().daemon:
        return 1
    return usable_cores() if requested == "auto" else int(requested)


def processes_for(requested: int | Literal["auto"], units: int, auto_from: int) -> int:
    """Worker processes for ``units`` pieces of work: ``process_count(requested)``, but this process
    alone for a single unit or, with auto, for fewer than ``auto_from`` (a worker starts in about a
    second)."""
    if units < 2 or (requested == "auto" and units < auto_from):
        return 1
    return process_count(requested)


def batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    """``items`` in consecutive lists of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def in_processes(
    function: Callable[..., Result], calls: Iterable[tuple[object, ...]], workers: int
) -> Iterator[Result]:
    """``function(*arguments)`` for each tuple of ``calls`` in ``workers`` processes, yielded in the
    order of ``calls``; two calls per worker are sent ahead of the one being yielded (memory stays bounded)."""
    parallel = Parallel(n_jobs=workers, backend="loky", return_as="generator", pre_dispatch="2*n_jobs", batch_size=1)
    with _deaf_to_ctrl_c():  # the workers start here: joblib sends the first calls at once
        results = parallel(delayed(function)(*arguments) for arguments in calls)
    yield from results


class Aside(Generic[Result]):
    """``function(*arguments)`` in a worker process while this one does other work (a report's files
    while its page is drawn); ``result()`` waits for it and raises what it raised. With ``workers``
    below 2 it runs here, at once. ``workers`` is the pool's size (the one the caller's other work
    used: joblib keeps that pool warm, and another size would start a new one); the call takes one.

    Whatever ends the caller's own work early (an error, a Ctrl-C) must still ``wait()``: a worker
    abandoned mid-write is stopped by joblib, and its files' temporary names stay behind."""

    def __init__(self, function: Callable[..., Result], arguments: tuple[object, ...], workers: int) -> None:
        self._pending: Iterator[Result] | None = None
        self._error: Exception | None = None
        if workers < 2:
            self._value = function(*arguments)
            return
        parallel = Parallel(n_jobs=workers, backend="loky", return_as="generator", batch_size=1)
        with _deaf_to_ctrl_c():  # the call is sent here, before this returns
            self._pending = parallel([delayed(function)(*arguments)])

    def result(self) -> Result:
        """Its value, once the worker has finished."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            try:
                (self._value,) = list(pending)
            except Exception as error:  # kept: asked again, it raises again
                self._error = error
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self) -> None:
        """Until the worker has finished, whatever it raised (the caller is already failing)."""
        with suppress(Exception):
            self.result()


@contextmanager
def _deaf_to_ctrl_c() -> Iterator[None]:
    """Processes started inside ignore SIGINT for life (an ignored signal stays ignored across exec,
    and Python then installs no KeyboardInterrupt handler). A Ctrl-C at the terminal reaches the whole
    process group: the caller turns it into one line and stops its workers, which otherwise printed
    a traceback each when it came while they started. Only the main thread may change a handler;
    elsewhere (a Prefect task) nothing changes. A Ctrl-C within the few milliseconds of the start is
    ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
