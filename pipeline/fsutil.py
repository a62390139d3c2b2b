"""Atomic file output: a failed run never leaves a file that looks finished."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import MsafError


@contextmanager
def atomic_output(final: str | os.PathLike[str], *, create: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds.

    ``create=False`` yields a free name with no file there, for writers (GDAL's GPKG and GeoJSON
    drivers) that refuse to write over an existing file.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    if not create:
        tmp.unlink()
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600 (writers may recreate it): usual permissions
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _strict(value: Any) -> Any:
    """NaN and infinities as null: strict JSON readers (DVC, browsers, jq) refuse the bare tokens."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write pretty, strict JSON atomically (undefined metrics such as NaN become null)."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(_strict(payload), indent=2, sort_keys=True, allow_nan=False) + "\n")


T = TypeVar("T")


def cached_json(
    cache_dir: Path,
    key: Mapping[str, Any],
    compute: Callable[[], T],
    dump: Callable[[T], Any],
    load: Callable[[Any], T],
) -> T:
    """``compute()`` once per ``key``: its result kept as JSON in ``cache_dir`` under a name hashed from
    the key, read back with ``load``; an entry that cannot be read back is computed again."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    entry = Path(cache_dir) / f"{digest}.json"
    if entry.is_file():
        try:
            return load(json.loads(entry.read_text()))
        except (ValueError, TypeError, AttributeError, OSError):
            entry.unlink(missing_ok=True)
    value = compute()
    entry.parent.mkdir(parents=True, exist_ok=True)
    write_json(entry, dump(value))
    return value


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256", chunk: int = 8 << 20, **options: Any) -> str:
    """Hex digest of a file's bytes, read in chunks (memory does not grow with the file)."""
    digest = hashlib.new(algorithm, **options)
    with open(path, "rb") as fh:
        while data := fh.read(chunk):
            digest.update(data)
    return digest.hexdigest()


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC, whether raised by Python or reported by GDAL in an error message."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return "no space left" in text or "free disk space" in text or "disk full" in text


def disk_error(exc: BaseException, folder: str | os.PathLike[str], needed_bytes: int | None = None) -> BaseException:
    """A full disk as one clear line (what is needed, what is free, what to do); other errors unchanged."""
    if not is_disk_full(exc):
        return exc
    try:
        free: int | None = shutil.disk_usage(folder).free
    except OSError:
        free = None
    return _no_space(folder, needed_bytes, free, "then rerun (finished blocks are kept, earlier outputs are untouched)")


def check_free_space(folder: str | os.PathLike[str], needed_bytes: int) -> None:
    """Refuse to start a job that cannot finish: one line before any work instead of ENOSPC half-way."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise _no_space(folder, needed_bytes, free)


def _no_space(folder: str | os.PathLike[str], needed_bytes: int | None, free: int | None, then: str = "") -> MsafError:
    needed = f"{needed_bytes / 1e6:.0f} MB needed, " if needed_bytes else ""
    available = f"{free / 1e6:.0f} MB free" if free is not None else "free space unknown"
    return MsafError(
        f"no space left on {folder}: {needed}{available}; free some space or choose another --out"
        + (f", {then}" if then else "")
    )
