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
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pipeline.errors import MsafError


@dataclass(frozen=True)
class SurveyFolder:
    """The layout of one survey folder: the one place its file names are spelt."""

    root: Path

    MASK: ClassVar[str] = "mask.tif"
    CONFIDENCE: ClassVar[str] = "confidence.tif"
    RECORD: ClassVar[str] = "survey.json"
    GPKG: ClassVar[str] = "defects.gpkg"
    GEOJSON: ClassVar[str] = "defects.geojson"
    CSV: ClassVar[str] = "defects.csv"
    PARQUET: ClassVar[str] = "defects.parquet"
    DXF: ClassVar[str] = "defects.dxf"  # the defect map for CAD (none for a geographic CRS)
    HTML: ClassVar[str] = "report.html"
    PDF: ClassVar[str] = "report.pdf"
    LOCK: ClassVar[str] = ".msaf.lock"
    BLOCKS: ClassVar[str] = ".msaf-blocks"  # finished blocks waiting for the stitch (kept for a resume)
    SURVEY_OUTPUTS: ClassVar[tuple[str, ...]] = (MASK, f"{MASK}.aux.xml", CONFIDENCE, RECORD)
    REPORT_OUTPUTS: ClassVar[tuple[str, ...]] = (GPKG, GEOJSON, CSV, PARQUET, DXF, HTML)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def mask(self) -> Path:
        """The class mask (COG)."""
        return self.root / self.MASK

    @property
    def confidence(self) -> Path:
        """The confidence raster (COG)."""
        return self.root / self.CONFIDENCE

    @property
    def record(self) -> Path:
        """survey.json: what ran, on what, how fast."""
        return self.root / self.RECORD

    @property
    def gpkg(self) -> Path:
        """The defect layers (and the inspector's review)."""
        return self.root / self.GPKG

    @property
    def html(self) -> Path:
        """The HTML report."""
        return self.root / self.HTML

    @property
    def blocks(self) -> Path:
        """The block stores of unfinished surveys."""
        return self.root / self.BLOCKS

    def __truediv__(self, name: str) -> Path:
        return self.root / name


LOCK_NAME = SurveyFolder.LOCK
SURVEY_OUTPUTS = SurveyFolder.SURVEY_OUTPUTS
REPORT_OUTPUTS = SurveyFolder.REPORT_OUTPUTS

_held: dict[Path, tuple[int, int, bool]] = {}  # folder -> (fd, depth, whether taking it created it)


def check_output_folder(out_dir: Path) -> None:
    """What can be told about an output folder before it is created: the nearest part of its path that
    exists is a folder this user may write in (a CLI checks it before loading its machinery)."""
    existing = out_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MsafError(f"cannot create output folder {out_dir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == out_dir.absolute():
            raise MsafError(f"output folder {out_dir} is not writable; choose another --out")
        raise MsafError(f"cannot create output folder {out_dir}: {existing} is not writable; choose another --out")


def prepare_output_folder(out_dir: Path, outputs: Sequence[str]) -> None:
    """Create an output folder and check it can take ``outputs``: writable, and no folder where one of
    them (a file) goes. The one check of every command that writes a folder (survey, report,
    compare, labels), so each says the same thing about the same mistake."""
    check_output_folder(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MsafError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):  # created here with a umask that leaves it unwritable
        raise MsafError(f"output folder {out_dir} is not writable; choose another --out")
    if taken := [name for name in outputs if (out_dir / name).is_dir()]:
        raise MsafError(f"{out_dir / taken[0]} is a folder where a file is written; move it or choose another --out")


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
    """Hold the folder for this process; another process gets one line and exit 2 (MsafError).

    A folder created here and left holding nothing but the lock (the work was refused before it
    wrote anything: a broken tracking store, a bad input) is removed again: a refused survey leaves
    no output behind. Temporary files of outputs that were never finished (a worker process stopped
    mid-write by a Ctrl-C) are removed when the folder is let go, as when it is taken."""
    folder = Path(folder).resolve()
    with _guard:
        if folder in _held:
            fd, depth, created = _held[folder]
            _held[folder] = (fd, depth + 1, created)
        else:
            created = not folder.exists()
            fd = _acquire(folder)
            _held[folder] = (fd, 1, created)
    try:
        yield
    finally:
        with _guard:
            fd, depth, created = _held[folder]
            if depth > 1:
                _held[folder] = (fd, depth - 1, created)
            else:
                del _held[folder]
                _sweep_partials(folder)
                if created:
                    _remove_if_only_the_lock(folder)
                os.close(fd)  # releases the flock


def _remove_if_only_the_lock(folder: Path) -> None:
    """The folder and its lock file removed when nothing else is in it (while the lock is held)."""
    try:
        if [entry.name for entry in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink()
            folder.rmdir()  # fails, harmlessly, if another process created a file meanwhile
    except OSError:
        pass


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
    for name in (*REPORT_OUTPUTS, SurveyFolder.RECORD):
        (folder / name).unlink(missing_ok=True)
