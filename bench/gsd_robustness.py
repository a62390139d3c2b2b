"""Does the answer travel across GSDs? The same ground at 0.5-2 mm, surveyed as it is and resampled.

Each set's validation photos are composed into a 1-mm orthomosaic with exact truth (as in
`survey_accuracy.py`), then resampled the way a drone flying closer or higher would see it
(GDAL average when coarser, cubic when finer) and surveyed with `survey.resample: off` and `auto`.
Every mask is brought back onto the 1-mm grid (nearest) and scored there against the same truth:
2-px tolerant crack F1 per set, GSD and mode, and the survey's end-to-end Mpix/s (input pixels).

    python bench/gsd_robustness.py --model pipeline/assets/msaf-dsnet.safetensors \
        --manifest data/prepared/manifest.json --size 1024 --out metrics/gsd_robustness.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rich.console import Console
from rich.table import Table

from pipeline.config import SurveyConfig
from pipeline.data.manifest import load_manifest
from pipeline.fsutil import write_json
from pipeline.inference.scales import parse_scales, scales_key
from pipeline.survey import run_survey
from pipeline.survey_accuracy import compose_val_mosaic, score_mask

GSDS_MM = (0.5, 0.7, 1.0, 1.4, 2.0)


def at_gsd(ortho: Path, gsd_mm: float, out: Path) -> Path:
    """The 1-mm orthomosaic as the same ground at ``gsd_mm``: area average when coarser, cubic when finer."""
    with rasterio.open(ortho) as src:
        rows, cols = round(src.height / gsd_mm), round(src.width / gsd_mm)
        method = Resampling.average if gsd_mm > 1 else Resampling.cubic
        data = src.read(out_shape=(src.count, rows, cols), resampling=method)
        transform = src.transform * src.transform.scale(src.width / cols, src.height / rows)
        profile = src.profile | {"width": cols, "height": rows, "transform": transform, "tiled": True}
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def on_truth_grid(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest: each 1-mm pixel takes the mask pixel under its centre."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0]).astype(int), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1]).astype(int), mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--size", type=int, default=1024, help="mosaic side in px at 1 mm")
    parser.add_argument("--sets", nargs="*", default=None, help="default: every set of the manifest")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--scales", default="1", help="views averaged per tile (survey.scales), e.g. 1,2")
    parser.add_argument("--gsds", type=float, nargs="*", default=list(GSDS_MM), help="GSDs in mm (default: all)")
    parser.add_argument("--modes", nargs="*", default=["off", "auto"], choices=["off", "auto"])
    args = parser.parse_args()
    gsds, modes = tuple(args.gsds), tuple(args.modes)
    scales = parse_scales(args.scales)

    manifest = load_manifest(args.manifest)
    results: dict[str, dict[str, dict[str, float | str]]] = {}
    with tempfile.TemporaryDirectory(prefix="msaf-gsd-") as tmp:
        work = Path(tmp)
        for entry in manifest.sets:
            if args.sets and entry.name not in args.sets:
                continue
            ortho, truth, names = compose_val_mosaic(entry, manifest.classes, args.size, work, args.seed)
            with rasterio.open(truth) as reference:
                expected = reference.read(1)
            for gsd in gsds:
                source = ortho if gsd == 1.0 else at_gsd(ortho, gsd, work / f"{entry.name}_{gsd}.tif")
                for mode in modes:
                    out = work / f"{entry.name}_{gsd}_{mode}"
                    cfg = SurveyConfig(device="cpu", resample=mode, gsd_policy="ignore", scales=scales)
                    record = run_survey(source, out, cfg, model_path=args.model)
                    with rasterio.open(out / "mask.tif") as mask:
                        predicted = on_truth_grid(mask.read(1), expected.shape)
                    crack = score_mask(predicted, expected, names).classes["crack"]
                    results.setdefault(entry.name, {})[f"{gsd}mm_{mode}"] = {
                        "tol_f1": crack.tol_f1,
                        "f1": crack.f1,
                        "mpix_per_s": record.throughput_mpix_s.end_to_end,
                        "factor": record.tiling.resample_factor,
                        "views_on_grid": scales_key(record.tiling.views or scales),
                    }
                    print(entry.name, gsd, mode, f"tol-F1 {crack.tol_f1:.3f}", flush=True)
    table = Table(title=f"crack tolerant F1 (2 px at 1 mm) on {args.size}² validation mosaics, scored on the 1-mm grid")
    table.add_column("set")
    table.add_column("mode")
    for gsd in gsds:
        table.add_column(f"{gsd} mm")
    table.add_column("Mpix/s (input px)")
    for name, rows in results.items():
        for mode in modes:
            cells = [f"{rows[f'{g}mm_{mode}']['tol_f1']:.3f}" for g in gsds]
            speed = " / ".join(f"{rows[f'{g}mm_{mode}']['mpix_per_s']:.2f}" for g in gsds)
            table.add_row(name, mode, *cells, speed)
    Console(width=160).print(table)
    if args.out:
        write_json(
            args.out,
            {"model": str(args.model), "size": args.size, "gsds_mm": gsds, "scales": list(scales), "sets": results},
        )


if __name__ == "__main__":
    main()
