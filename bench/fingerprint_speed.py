"""How fast a survey fingerprints its input: BLAKE3 (one thread, as shipped) against BLAKE2b (the
fingerprint of earlier releases), measured in the same run on the same file, with BLAKE3 on every
core for reference (not shipped: its thread pool hangs a forked child, see pipeline/fingerprint.py).

The file is random bytes (like a JPEG-tiled orthomosaic's, incompressible), read from the page
cache: the hash's own cost, which every survey pays before its first block; a file read cold from
disk is bounded by the disk as well.

    python bench/fingerprint_speed.py [--mb 1024] [--repeats 5] [--out metrics/fingerprint_speed.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from blake3 import blake3
from machine import machine  # beside this script
from rich.console import Console
from rich.table import Table

from pipeline.fingerprint import earlier_file_fingerprint, file_fingerprint, hashed

ORTHO_100K_JPEG_GB = 2.5  # a 100k x 100k RGB orthomosaic, JPEG-tiled at quality ~90


def gb_per_s(hash_file, path: Path, repeats: int) -> float:
    """Median rate over ``repeats`` runs (one untimed run first, so the file is in the page cache)."""
    hash_file(path)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        hash_file(path)
        rates.append(path.stat().st_size / (time.perf_counter() - started) / 1e9)
    return statistics.median(rates)


def every_core_fingerprint(path: Path) -> str:
    """BLAKE3 with its own threads on every core, read as the shipped fingerprint reads."""
    return hashed(blake3(max_threads=blake3.AUTO), path).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="JSON file for the numbers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ortho.bin"
        rng = np.random.default_rng(0)
        with open(path, "wb") as fh:
            for _ in range(args.mb):
                fh.write(rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes())
        earlier = gb_per_s(earlier_file_fingerprint, path, args.repeats)
        current = gb_per_s(file_fingerprint, path, args.repeats)
        every_core = gb_per_s(every_core_fingerprint, path, args.repeats)
    result = {
        "machine": machine(),
        "mib": args.mb,
        "repeats": args.repeats,
        "blake2b_gb_s": earlier,
        "blake3_gb_s": current,
        "blake3_every_core_gb_s": every_core,
        "ratio": current / earlier,
        "ortho_100k_jpeg_s": {"blake2b": ORTHO_100K_JPEG_GB / earlier, "blake3": ORTHO_100K_JPEG_GB / current},
    }
    table = Table(title=f"Fingerprint of a {args.mb} MiB file (page cache), median of {args.repeats}")
    for column in ("hash", "GB/s", "x BLAKE2b", f"a {ORTHO_100K_JPEG_GB:g} GB orthomosaic"):
        table.add_column(column, justify="right")
    rows = (
        ("BLAKE2b (earlier releases)", earlier),
        ("BLAKE3, one thread (now)", current),
        ("BLAKE3, every core (not shipped)", every_core),
    )
    for name, rate in rows:
        table.add_row(name, f"{rate:.2f}", f"{rate / earlier:.2f}", f"{ORTHO_100K_JPEG_GB / rate:.2f} s")
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
