"""Atomic file output: a failed run never leaves a file that looks finished."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_output(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
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


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256", chunk: int = 8 << 20, **options: Any) -> str:
    """Hex digest of a file's bytes, read in chunks (memory does not grow with the file)."""
    digest = hashlib.new(algorithm, **options)
    with open(path, "rb") as fh:
        while data := fh.read(chunk):
            digest.update(data)
    return digest.hexdigest()
