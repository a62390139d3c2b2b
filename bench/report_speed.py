"""`msaf report` at bridge scale: defects measured in this process against worker processes.

The crackforest validation mosaic (real crack shapes and photos, 1-mm pixels) and its truth are
tiled k x k into one survey folder: the truth as its mask, the photos as its orthomosaic (crack
widths from the image, as a real survey reports them). Each size is reported with
``report.workers: 1`` (the baseline, this run) and with ``auto`` (one process per usable core from
200 defects up; ``--workers N``: N processes at every size);
printed: defects, seconds each, the speed-up, and whether the defect files are the same bytes.

    python bench/report_speed.py --tiles 2 4 8 --out metrics/report_speed.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from compare_speed import write_mask
from rasterio.transform import from_origin
from rich.console import Console
from rich.table import Table

from pipeline.config import ReportConfig
from pipeline.data.manifest import load_manifest
from pipeline.fsutil import write_json
from pipeline.report.build import report_survey
from pipeline.survey_accuracy import compose_val_mosaic
from pipeline.threads import usable_cores

COMPARED = ("defects.csv", "defects.geojson")  # the defect files; report.html and the GPKG carry dates


def write_survey(folder: Path, mask: np.ndarray, image: np.ndarray, classes: str) -> Path:
    """A survey folder holding its mask (``compare_speed.write_mask``), and the orthomosaic beside it
    on the same grid (returned)."""
    write_mask(folder, mask, classes, shift_px=0)
    height, width = mask.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "crs": "EPSG:32633", "tiled": True}
    profile |= {"transform": from_origin(400000, 5000000, 0.001, 0.001), "compress": "deflate"}
    ortho = folder.parent / f"{folder.name}-ortho.tif"
    with rasterio.open(ortho, "w", **profile, count=image.shape[0], dtype=image.dtype) as dst:
        dst.write(image)
    return ortho


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--set", default="crackforest", help="whose validation photos and truth are tiled")
    parser.add_argument("--size", type=int, default=2048, help="the tile's side in px")
    parser.add_argument("--tiles", type=int, nargs="+", default=[2, 4, 8], help="k: the survey is k x k tiles")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workers", default="auto", help="report.workers compared with 1: auto or a count")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = parser.parse_args()
    compared: int | Literal["auto"] = "auto" if args.workers == "auto" else int(args.workers)
    manifest = load_manifest(args.manifest)
    (entry,) = [entry for entry in manifest.sets if entry.name == args.set]
    rows = []
    with tempfile.TemporaryDirectory(prefix="msaf-report-speed-") as tmp:
        work = Path(tmp)
        image_path, truth, names = compose_val_mosaic(entry, manifest.classes, args.size, work, args.seed)
        with rasterio.open(truth) as src:
            tile = src.read(1)
        with rasterio.open(image_path) as src:
            photo = src.read()
        for k in args.tiles:
            seconds: dict[int | str, float] = {}
            outputs: dict[int | str, list[bytes]] = {}
            found = 0
            for workers in (1, compared):
                folder = work / f"{k}-{workers}"
                ortho = write_survey(folder, np.tile(tile, (k, k)), np.tile(photo, (1, k, k)), json.dumps(names))
                started = time.perf_counter()
                found = report_survey(folder, ReportConfig(workers=workers), image=ortho).by_class.get("crack", 0)
                seconds[workers] = time.perf_counter() - started
                outputs[workers] = [(folder / name).read_bytes() for name in COMPARED]
                shutil.rmtree(folder)
                ortho.unlink()
            rows.append(
                {
                    "side_px": args.size * k,
                    "cracks": found,
                    "one_process_s": seconds[1],
                    "workers_s": seconds[compared],
                    "speedup": seconds[1] / seconds[compared],
                    "same_bytes": outputs[1] == outputs[compared],
                }
            )
    table = Table(title=f"msaf report by size ({args.set} tiled, widths from the image; {usable_cores()} cores)")
    for column in ("side", "cracks", "workers: 1", f"workers: {compared}", "speed-up", "same defect files"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            f"{row['side_px']}²",
            str(row["cracks"]),
            f"{row['one_process_s']:.1f} s",
            f"{row['workers_s']:.1f} s",
            f"{row['speedup']:.2f}×",
            "yes" if row["same_bytes"] else "NO",
        )
    Console().print(table)
    if args.out:
        summary = {"set": args.set, "tile_px": args.size, "cores": usable_cores(), "workers": compared}
        write_json(args.out, summary | {"sizes": rows})


if __name__ == "__main__":
    main()
