"""Finished block results on disk: what makes a killed survey resumable.

A block's class ids and confidence are written atomically (temporary name, then rename) into a
folder keyed by everything that determines them (source fingerprint, model hash, inference
settings), so a rerun reuses exactly the blocks that finished and never a stale one.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from pipeline.inference.blend import BlockResult
from pipeline.raster.grid import Box

HEADER = struct.Struct("<4q2Q")  # row0, col0, row1, col1, compressed sizes of the two layers


class BlockStore:
    """A folder of ``block_NNNNNN.blk`` files (zlib level 1: fast, and masks compress well)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, index: int) -> Path:
        return self.root / f"block_{index:06d}.blk"

    def done(self) -> set[int]:
        return {int(p.stem.split("_")[1]) for p in self.root.glob("block_*.blk")}

    def save(self, index: int, result: BlockResult) -> None:
        classes = zlib.compress(np.ascontiguousarray(result.classes).tobytes(), 1)
        confidence = zlib.compress(np.ascontiguousarray(result.confidence).tobytes(), 1)
        core = result.core
        fd, tmp = tempfile.mkstemp(prefix=".block.", suffix=".partial", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(HEADER.pack(core.row0, core.col0, core.row1, core.col1, len(classes), len(confidence)))
                fh.write(classes)
                fh.write(confidence)
            os.replace(tmp, self.path(index))
        finally:
            Path(tmp).unlink(missing_ok=True)

    def load(self, index: int) -> BlockResult:
        data = self.path(index).read_bytes()
        row0, col0, row1, col1, n_classes, n_conf = HEADER.unpack_from(data)
        shape = (row1 - row0, col1 - col0)
        start = HEADER.size
        classes = np.frombuffer(zlib.decompress(data[start:start + n_classes]), np.uint8).reshape(shape)
        confidence = np.frombuffer(zlib.decompress(data[start + n_classes:start + n_classes + n_conf]),
                                   np.uint8).reshape(shape)
        return BlockResult(Box(row0, col0, row1, col1), classes, confidence)

    def clear(self) -> None:
        for path in self.root.glob("*"):
            path.unlink(missing_ok=True)
        self.root.rmdir()
        with contextlib.suppress(OSError):
            self.root.parent.rmdir()  # the folder of all keys, once empty
