"""A survey stopped from outside (Ctrl-C) stops its worker threads within one batch.

Python delivers SIGINT to the main thread only; the survey's inference runs in worker threads
(Prefect's task runner, the block pipeline), and a pool's shutdown waits for them. Without a
shared flag, a Ctrl-C waited until the running chunk of blocks was finished: minutes on a CPU.
The CLI's signal handler calls ``request_stop``; the engine calls ``raise_if_stopped`` between
batches and blocks.
"""

from __future__ import annotations

import threading

_STOP = threading.Event()


class Stopped(Exception):
    """Raised in a worker thread after a stop was requested (the survey's output stays unpublished)."""


def request_stop() -> None:
    """Ask every running survey in this process to stop at its next batch."""
    _STOP.set()


def clear_stop() -> None:
    """Forget an earlier request (a new survey starts)."""
    _STOP.clear()


def stop_requested() -> bool:
    """Whether a stop was requested (and not cleared since)."""
    return _STOP.is_set()


def raise_if_stopped() -> None:
    """Raise ``Stopped`` if a stop was requested."""
    if stop_requested():
        raise Stopped("stopped on request")
