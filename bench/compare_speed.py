"""How `msaf compare` scales with the cracks of a survey: time per crack at growing sizes.

A bridge's orthomosaic holds tens of thousands of cracks; a step that searches every crack's rows
for each crack is quadratic and invisible on a test raster. The crackforest validation mosaic's
truth (real crack shapes, 1-mm pixels) is tiled k × k into the mask of two surveys one pixel apart
(masks only: widths from the masks, registration on the masks); each is reported and the two are
compared. Printed per size: cracks, report and compare seconds, and the compare's time per crack
as a ratio to the smallest size's (1.0: linear in the cracks).

    python bench/compare_speed.py --tiles 1 2 4 8 --out metrics/compare_speed.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rich.console import Console
from rich.table import Table

from pipeline.config import ReportConfig
from pipeline.data.manifest import load_manifest
from pipeline.fsutil import write_json
from pipeline.report.build import report_survey
from pipeline.report.compare import compare_surveys
from pipeline.survey_accuracy import compose_val_mosaic


def write_mask(folder: Path, mask: np.ndarray, classes: str, shift_px: int) -> Path:
    """A survey folder holding only its mask (1-mm pixels), ``shift_px`` east of the first."""
    folder.mkdir(parents=True)
    height, width = mask.shape
    transform = from_origin(400000 + shift_px * 0.001, 5000000, 0.001, 0.001)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8"}
    profile |= {"crs": "EPSG:32633", "transform": transform, "nodata": 255, "tiled": True, "compress": "deflate"}
    with rasterio.open(folder / "mask.tif", "w", **profile) as dst:
        dst.write(mask, 1)
        dst.update_tags(MSAF_CLASSES=classes)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--set", default="crackforest", help="whose validation truth is tiled")
    parser.add_argument("--size", type=int, default=2048, help="the tile's side in px")
    parser.add_argument("--tiles", type=int, nargs="+", default=[1, 2, 4, 8], help="k: the mask is k x k tiles")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = parser.parse_args()
    manifest = load_manifest(args.manifest)
    (entry,) = [entry for entry in manifest.sets if entry.name == args.set]
    cfg = ReportConfig()
    rows = []
    with tempfile.TemporaryDirectory(prefix="msaf-compare-speed-") as tmp:
        work = Path(tmp)
        _, truth, names = compose_val_mosaic(entry, manifest.classes, args.size, work, args.seed)
        with rasterio.open(truth) as src:
            tile = src.read(1)
        classes = json.dumps(names)
        for k in args.tiles:
            mask = np.tile(tile, (k, k))
            folders = [
                write_mask(work / f"{k}-{name}", mask, classes, shift) for name, shift in (("old", 0), ("new", 1))
            ]
            started = time.perf_counter()
            found = [report_survey(folder, cfg) for folder in folders]
            reported = (time.perf_counter() - started) / 2
            started = time.perf_counter()
            compare_surveys(*folders, work / f"{k}-changes", cfg)
            compared = time.perf_counter() - started
            cracks = found[1].by_class.get("crack", 0)
            rows.append({"side_px": args.size * k, "cracks": cracks, "report_s": reported, "compare_s": compared})
    baseline = rows[0]["compare_s"] / max(rows[0]["cracks"], 1)
    for row in rows:
        row["per_crack_ratio"] = row["compare_s"] / max(row["cracks"], 1) / baseline
    table = Table(title=f"msaf compare by survey size ({args.set} truth tiled; 2 surveys, masks only)")
    for column in ("side", "cracks", "report", "compare", "compare per crack", "vs smallest"):
        table.add_column(column)
    for row in rows:
        per_crack = row["compare_s"] / max(row["cracks"], 1)
        table.add_row(
            f"{row['side_px']}²",
            str(row["cracks"]),
            f"{row['report_s']:.1f} s",
            f"{row['compare_s']:.1f} s",
            f"{per_crack * 1000:.1f} ms",
            f"{row['per_crack_ratio']:.2f}×",
        )
    Console().print(table)
    if args.out:
        write_json(args.out, {"set": args.set, "tile_px": args.size, "sizes": rows})


if __name__ == "__main__":
    main()
