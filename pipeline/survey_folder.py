"""One survey folder, one survey: an exclusive lock, and outputs that always describe the same run.

The lock is an advisory ``flock`` on ``.msaf.lock`` in the folder: the kernel drops it when its
process dies, whatever kills it, so there is never a stale lock to delete by hand; taking it sweeps
away the half-written files of a killed run. It is
re-entrant within a process (the CLI, the flow and the engine each take it). A new mask retires
the report outputs of the previous run before it is published, so a report that then fails leaves
a folder without a report, never one whose report describes another mask.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import MsafError

LOCK_NAME = ".msaf.lock"
SURVEY_OUTPUTS = ("mask.tif", "mask.tif.aux.xml", "confidence.tif", "survey.json")
REPORT_OUTPUTS = ("defects.gpkg", "defects.geojson", "defects.csv", "defects.parquet", "report.html")

_held: dict[Path, tuple[int, int]] = {}  # folder -> (fd, depth)


def refuse_overwriting(
    inputs: Sequence[str | os.PathLike[str]], out_dir: Path, outputs: tuple[str, ...], job: str
) -> None:
    """One line before any work when one of ``outputs`` written into ``out_dir`` would replace an
    input (an orthomosaic named mask.tif surveyed into its own folder; resolved through links)."""
    targets = {os.path.realpath(out_dir / name): name for name in outputs}
    for item in inputs:
        name = targets.get(os.path.realpath(item))
        if name is not None:
            raise MsafError(f"{item}: the {job} would overwrite this input with its {name}; choose another --out")


_guard = threading.Lock()


@contextmanager
def exclusive(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the folder for this process; another process gets one line and exit 2 (MsafError)."""
    folder = Path(folder).resolve()
    with _guard:
        if folder in _held:
            fd, depth = _held[folder]
            _held[folder] = (fd, depth + 1)
        else:
            fd = _acquire(folder)
            _held[folder] = (fd, 1)
    try:
        yield
    finally:
        with _guard:
            fd, depth = _held[folder]
            if depth > 1:
                _held[folder] = (fd, depth - 1)
            else:
                del _held[folder]
                os.close(fd)  # releases the flock


def _acquire(folder: Path) -> int:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise MsafError(f"cannot create output folder {folder}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise MsafError(
            f"{folder} is in use by another survey or report ({owner}); wait for it to finish or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
    _sweep_partials(folder)
    return fd


def _sweep_partials(folder: Path) -> None:
    """Remove what killed runs left half-written (``.NAME.XXXX.partial.EXT``, see ``fsutil.atomic_output``):
    with the lock held nobody else is writing them."""
    for leftover in folder.glob(".*.partial*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


def retire_report(folder: Path) -> None:
    """Remove the previous run's report outputs and record (before a new mask is published)."""
    for name in (*REPORT_OUTPUTS, "survey.json"):
        (folder / name).unlink(missing_ok=True)
