"""File fingerprints: BLAKE3, exact values, safe in a forked child; values of earlier releases still checked."""

from __future__ import annotations

import hashlib
import os

import numpy as np
from blake3 import blake3

from pipeline.fingerprint import earlier_file_fingerprint, file_fingerprint, is_earlier, matches

EMPTY_BLAKE3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"  # the specification's value


def test_the_fingerprint_is_blake3_of_the_bytes_whatever_the_chunk(tmp_path):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    assert file_fingerprint(empty) == EMPTY_BLAKE3
    data = np.random.default_rng(3).integers(0, 256, (9 << 20) + 123, dtype=np.uint8).tobytes()
    path = tmp_path / "ortho.tif"
    path.write_bytes(data)
    expected = blake3(data, max_threads=1).hexdigest()  # one thread, one piece: the reference
    assert {file_fingerprint(path), file_fingerprint(path, chunk=1 << 20), file_fingerprint(path, chunk=4099)} == {
        expected
    }
    assert len(expected) == 64 and not is_earlier(expected)


def test_a_fingerprint_recorded_by_an_earlier_release_is_checked_with_its_own_hash(tmp_path):
    path = tmp_path / "ortho.tif"
    path.write_bytes(b"orthomosaic bytes" * 1000)
    earlier = hashlib.blake2b(path.read_bytes(), digest_size=20).hexdigest()
    current = file_fingerprint(path)
    assert earlier_file_fingerprint(path) == earlier and is_earlier(earlier)
    assert matches(path, earlier) and matches(path, current)
    with open(path, "r+b") as fh:  # one byte changed, size and name kept
        fh.seek(5000)
        fh.write(b"X")
    assert not matches(path, earlier) and not matches(path, current)


def test_the_fingerprint_bench_measures_both_hashes_on_the_same_file(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench" / "fingerprint_speed.py"
    out = tmp_path / "speed.json"
    done = subprocess.run(
        [sys.executable, str(bench), "--mb", "8", "--repeats", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["mib"] == 8 and result["blake2b_gb_s"] > 0 and result["blake3_gb_s"] > 0
    assert result["ratio"] == result["blake3_gb_s"] / result["blake2b_gb_s"]
    assert "BLAKE3, one thread (now)" in done.stdout and result["blake3_every_core_gb_s"] > 0


def test_a_forked_child_fingerprints_after_its_parent_did(tmp_path):
    """BLAKE3's own thread pool, once started, hangs a forked child's hash for ever (DataLoader workers
    and multiprocessing fork): the fingerprint never starts it."""
    import time

    path = tmp_path / "ortho.tif"
    path.write_bytes(np.random.default_rng(5).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes())
    expected = file_fingerprint(path)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's result is its exit status
        os._exit(0 if file_fingerprint(path) == expected else 1)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(child, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if done == (0, 0):
        os.kill(child, 9)
        os.waitpid(child, 0)
    assert done != (0, 0), "the forked child's fingerprint hung"
    assert os.waitstatus_to_exitcode(done[1]) == 0
