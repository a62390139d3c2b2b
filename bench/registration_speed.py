"""What registering two epochs costs `msaf compare`, against one full-resolution read of the new
orthomosaic (block by block: the first thing its survey did), on orthomosaics of growing size.

Per size, an orthomosaic of real concrete (UAV75 photos, a random photo and flip per 512-px cell, so
the texture never repeats) is written as a drone-processing package writes one: JPEG-tiled (YCbCr),
with overviews. The second epoch is the same ground georeferenced 123.4 mm east and 56.7 mm south
of the first (a flight without ground control) and in other light (gamma 1.2, JPEG quality 75).
Both steps run in this process; the peak memory each adds is read from tracemalloc (numpy's
buffers). Memory must not grow with the raster: every read is a decimated window.

    python bench/registration_speed.py --sizes 4096 16384 --out metrics/registration_speed.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pyproj
import rasterio
import shapely
from condition_speed import drone_ortho_profile, measured  # beside this script
from PIL import Image
from rasterio.enums import Resampling
from rasterio.windows import Window

from pipeline.config import RegistrationConfig
from pipeline.report.registration import register_epochs

UAV75 = Path(__file__).parents[1] / "data" / "sources" / "uav75" / "images"
GSD_M = 0.001
CELL = 512
OFFSET_M = (0.1234, -0.0567)  # the second epoch's georeferencing error, east and north
ORIGIN = (400000.0, 5000000.0)


def write_epoch(
    path: Path, size: int, photos: list[np.ndarray], origin: tuple[float, float], gamma: float, quality: int
) -> None:
    """A ``size``² RGB orthomosaic of real concrete, JPEG-tiled with overviews, written in strips."""
    profile = drone_ortho_profile(size, origin, CELL, quality)
    lut = (255 * (np.arange(256) / 255) ** gamma).astype(np.uint8)
    cells = math.ceil(size / CELL)
    rng = np.random.default_rng(0)  # the same ground in both epochs
    with rasterio.open(path, "w", **profile) as ds:
        for row in range(cells):
            strip = np.empty((CELL, cells * CELL, 3), np.uint8)
            for col in range(cells):
                photo = photos[rng.integers(len(photos))]
                flips = rng.integers(4)
                tile = photo[:: 1 if flips & 1 else -1, :: 1 if flips & 2 else -1]
                strip[:, col * CELL : (col + 1) * CELL] = tile[:CELL, :CELL]
            rows = min(CELL, size - row * CELL)
            ds.write(lut[strip[:rows, :size]].transpose(2, 0, 1), window=Window(0, row * CELL, size, rows))
        factors = [2**k for k in range(1, 16) if size / 2**k >= 256]
        ds.build_overviews(factors, Resampling.average)


def full_read(path: Path) -> None:
    """The baseline: the orthomosaic decoded once at full resolution, block by block."""
    with rasterio.open(path) as ds:
        for _, window in ds.block_windows(1):
            ds.read(window=window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(UAV75.glob("*.jpg"))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            old, new = Path(tmp) / f"old-{size}.tif", Path(tmp) / f"new-{size}.tif"
            write_epoch(old, size, photos, ORIGIN, 1.0, 90)
            write_epoch(new, size, photos, (ORIGIN[0] + OFFSET_M[0], ORIGIN[1] + OFFSET_M[1]), 1.2, 75)
            common = shapely.box(ORIGIN[0], ORIGIN[1] - size * GSD_M, ORIGIN[0] + size * GSD_M, ORIGIN[1])

            def register(o=old, n=new, c=common):
                return register_epochs(o, n, pyproj.CRS("EPSG:32633"), c, RegistrationConfig())

            baseline_s, baseline_mb = measured(lambda n=new: full_read(n))
            register_s, register_mb = measured(register)
            found = register()
            error_mm = math.hypot(found.east_m + OFFSET_M[0], found.north_m + OFFSET_M[1]) * 1000
            row = {
                "size": size,
                "full_read_s": round(baseline_s, 3),
                "registration_s": round(register_s, 3),
                "ratio": round(register_s / baseline_s, 2),
                "full_read_peak_mb": round(baseline_mb, 1),
                "registration_peak_mb": round(register_mb, 1),
                "applied": found.applied,
                "windows": found.windows,
                "agreeing": found.agreeing,
                "error_mm": round(error_mm, 3),
            }
            rows.append(row)
            print(
                f"{size}²: one full read {baseline_s:.2f} s ({baseline_mb:.0f} MB), registration {register_s:.2f} s "
                f"({register_mb:.0f} MB): {row['ratio']}x; {found.summary()}; error {error_mm:.2f} mm"
            )
    if args.out:
        args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
