"""What ``survey.view_gate`` saves on a surface that is mostly sound, and what it changes.

A bridge orthomosaic is mostly sound concrete; the validation mosaics are not (their photos were
taken because they show cracks, so every 256² tile holds one). This bench builds a 2048² raster
from 256² patches of the UAV75 wall photos: patches with no labelled crack or joint, and a share of
patches with cracks (``--cracked``), each placed whole (JPEG-tiled, 1 mm, a CRS). It then surveys
it with one view, with views 1,2 on every tile (``view_gate 0``) and with the gate: Mpix/s, the
share of tiles the gate sent to the second view (from the runner), and how many mask pixels the
gate changed against every tile seeing both views.

    python bench/view_gate.py --model pipeline/assets/msaf-dsnet.safetensors [--cracked 0.1] [--gate 0.1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from rich.console import Console
from rich.table import Table

from pipeline.config import SurveyConfig
from pipeline.data.manifest import load_manifest
from pipeline.fsutil import write_json
from pipeline.survey import run_survey

PATCH = 256


def patches(manifest: Path, cracked_share: float, count: int, seed: int) -> list[np.ndarray]:
    """``count`` RGB patches of the UAV75 photos: sound ones and ``cracked_share`` of cracked ones."""
    entry = next(s for s in load_manifest(manifest).sets if s.name == "uav75")
    sound: list[np.ndarray] = []
    cracked: list[np.ndarray] = []
    for pair in entry.pairs("train") + entry.pairs("val"):
        image = np.asarray(Image.open(pair.image).convert("RGB"))
        mask = np.asarray(Image.open(pair.mask).convert("L"))
        for row in range(0, image.shape[0] - PATCH + 1, PATCH):
            for col in range(0, image.shape[1] - PATCH + 1, PATCH):
                window = (slice(row, row + PATCH), slice(col, col + PATCH))
                (cracked if mask[window].any() else sound).append(image[window])
    rng = np.random.default_rng(seed)
    n_cracked = round(count * cracked_share)
    chosen = [sound[i] for i in rng.integers(0, len(sound), count - n_cracked)]
    chosen += [cracked[i] for i in rng.integers(0, len(cracked), n_cracked)]
    rng.shuffle(chosen)
    print(f"{len(sound)} sound and {len(cracked)} cracked 256² patches; {n_cracked} of {count} cracked")
    return [np.rot90(p, int(rng.integers(0, 4))) for p in chosen]  # no two neighbours alike


def write_raster(path: Path, tiles: list[np.ndarray], side: int) -> None:
    per_row = side // PATCH
    image = np.zeros((3, side, side), np.uint8)
    for i, patch in enumerate(tiles):
        row, col = divmod(i, per_row)
        image[:, row * PATCH : (row + 1) * PATCH, col * PATCH : (col + 1) * PATCH] = patch.transpose(2, 0, 1)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "tiled": True}
    profile |= {"compress": "jpeg", "photometric": "ycbcr", "blockxsize": 512, "blockysize": 512}
    with rasterio.open(
        path, "w", **profile, crs="EPSG:32633", transform=from_origin(500000, 5000000, 0.001, 0.001)
    ) as dst:
        dst.write(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--cracked", type=float, default=0.1, help="share of cracked patches")
    parser.add_argument("--gate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from pipeline.inference import predict as predict_module

    seen = {"first": 0, "again": 0}  # tiles through the first view, and through the 2x view
    original = predict_module._view_probabilities

    def counted(forward, inputs, scale, flip, out, per_pass=None):
        seen["first" if scale == 1.0 else "again"] += 0 if flip else inputs.shape[0]
        return original(forward, inputs, scale, flip, out, per_pass)

    results = {}
    with tempfile.TemporaryDirectory(prefix="msaf-gate-") as tmp:
        work = Path(tmp)
        raster = work / "wall.tif"
        write_raster(raster, patches(args.manifest, args.cracked, (args.size // PATCH) ** 2, args.seed), args.size)
        masks = {}
        runs = {
            "one view": ((1.0,), 0.0),
            "views 1,2": ((1.0, 2.0), 0.0),
            f"views 1,2, gate {args.gate:g}": ((1.0, 2.0), args.gate),
        }
        predict_module._view_probabilities = counted
        try:
            for name, (scales, gate) in runs.items():
                seen.update(first=0, again=0)
                out = work / name.replace(" ", "_").replace(",", "")
                started = time.perf_counter()
                record = run_survey(
                    raster, out, SurveyConfig(device="cpu", scales=scales, view_gate=gate), model_path=args.model
                )
                seconds = time.perf_counter() - started
                with rasterio.open(out / "mask.tif") as ds:
                    masks[name] = ds.read(1)
                results[name] = {
                    "seconds": seconds,
                    "mpix_s": args.size**2 / 1e6 / seconds,
                    "second_view_share": seen["again"] / seen["first"] if len(scales) > 1 else None,
                    "crack_px": record.class_pixels.get("crack", 0),
                }
        finally:
            predict_module._view_probabilities = original
    full = masks["views 1,2"]
    for name, mask in masks.items():
        results[name]["px_differing_from_views_1_2"] = int((mask != full).sum())
    table = Table(title=f"{args.size}² UAV75 wall, {args.cracked:.0%} cracked patches, {args.model.name}")
    for column in ("survey", "Mpix/s", "tiles given the 2x view", "crack px", "px unlike views 1,2 on every tile"):
        table.add_column(column)
    for name, r in results.items():
        share = "" if r["second_view_share"] is None else f"{r['second_view_share']:.0%}"
        table.add_row(name, f"{r['mpix_s']:.2f}", share, f"{r['crack_px']:,}", f"{r['px_differing_from_views_1_2']:,}")
    Console(width=150).print(table)
    if args.out:
        write_json(args.out, {"model": str(args.model), "size": args.size, "cracked": args.cracked, "runs": results})


if __name__ == "__main__":
    main()
