"""What identifies a file's bytes: its BLAKE3 hash.

The fingerprint keys a survey's block store (a resumed survey never reuses stale blocks), names the
orthomosaic in survey.json and in label sets (a report or a training run refuses an image that has
changed since), and keys the inbox's ledger of processed files. It is on the path of every survey
before its first block, so its speed counts at scale: BLAKE3 (SIMD over its tree's pieces) hashes
a 1 GiB file at 7.4 GB/s on one core against 1.34 GB/s for BLAKE2b, the fingerprint before (a
100k x 100k JPEG orthomosaic, ~2.5 GB: 1.9 s became 0.34 s; ``bench/fingerprint_speed.py``).
The file is read 4 MiB at a time into one buffer (memory flat however large the file; a memory map
was no faster, and a file cut short while mapped kills the process). One thread: BLAKE3's own
threads (9.6 GB/s on two cores) live in a pool that a forked process inherits without its threads,
so a hash in the child hangs for ever (tested), and processes fork after hashing (training's
DataLoader workers, after its label sets' images are checked).

Fingerprints recorded before are BLAKE2b-160 (40 hex digits; a BLAKE3 fingerprint has 64):
``matches`` checks a recorded value with its own algorithm, so older survey folders and label sets
still check, and the ledger re-keys its older records (``flows/ledger.py``).
"""

from __future__ import annotations

import os

from blake3 import blake3

from pipeline.fsutil import file_digest

CHUNK_BYTES = 4 << 20  # read at a time: 5.8 GB/s (median of 5; 5.6 at 256 KiB and at 1 MiB)
EARLIER_HEX_DIGITS = 40  # BLAKE2b with a 20-byte digest: the fingerprint of releases before BLAKE3


def file_fingerprint(path: str | os.PathLike[str], chunk: int = CHUNK_BYTES) -> str:
    """BLAKE3 (32 bytes, hex) of the file's bytes, on this thread (the GIL released while it hashes)."""
    return hashed(blake3(max_threads=1), path, chunk).hexdigest()


def hashed(digest: blake3, path: str | os.PathLike[str], chunk: int = CHUNK_BYTES) -> blake3:
    """``digest`` updated with the file's bytes, read ``chunk`` bytes at a time into one buffer."""
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while size := fh.readinto(buffer):
            digest.update(view[:size])
    return digest


def earlier_file_fingerprint(path: str | os.PathLike[str]) -> str:
    """The fingerprint of releases before BLAKE3: BLAKE2b-160 of the bytes (serial, ~1.3 GB/s)."""
    return file_digest(path, "blake2b", digest_size=20)


def is_earlier(fingerprint: str) -> bool:
    """Whether a recorded fingerprint is the earlier kind (BLAKE2b-160)."""
    return len(fingerprint) == EARLIER_HEX_DIGITS


def matches(path: str | os.PathLike[str], recorded: str) -> bool:
    """Whether the file still has the bytes ``recorded`` names, whichever kind it was recorded with."""
    current = earlier_file_fingerprint(path) if is_earlier(recorded) else file_fingerprint(path)
    return current == recorded
