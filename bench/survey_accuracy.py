"""Accuracy through the real survey: each data set's validation photos composed into a stitched,
georeferenced orthomosaic, surveyed tile by tile with `run_survey`, the mask scored against the
mosaic's exact truth raster (per set: IoU, F1, 2-px tolerant F1, median crack width, joint pixels
called crack).

    python bench/survey_accuracy.py --model pipeline/assets/msaf-dsnet.safetensors \
        --manifest data/prepared/manifest.json --size 2048 --out metrics/survey_accuracy.json
    python bench/survey_accuracy.py --model ... --tta     # the same with flip test-time augmentation
    python bench/survey_accuracy.py --model ... --tile 1024 --overlap 64   # larger tiles (a GPU's choice)
    python bench/survey_accuracy.py --model ... --precision bf16   # bf16 on a CPU with native bf16
    python bench/survey_accuracy.py --model ... --scales 1,2       # multi-scale: each tile also seen at 2x
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.checkpoint import read_metadata
from pipeline.config import SurveyConfig
from pipeline.data.manifest import load_manifest
from pipeline.fsutil import write_json
from pipeline.inference.scales import parse_scales, scales_key
from pipeline.survey_accuracy import survey_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--size", type=int, default=2048, help="mosaic side in px")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--tta", action="store_true", help="average with horizontally flipped tiles (survey.tta)")
    parser.add_argument("--tile", type=int, default=None, help="inference tile (default: the model's)")
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap (default: tile // 4)")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="the network's arithmetic (survey.precision)",
    )
    parser.add_argument("--scales", default="1", help="views averaged per tile (survey.scales), e.g. 1,2")
    parser.add_argument(
        "--exposure-floor", type=float, default=None, help="lift tiles darker than this (default: the model's)"
    )
    args = parser.parse_args()
    scales = parse_scales(args.scales)

    manifest = load_manifest(args.manifest)
    meta = read_metadata(args.model)
    results = {}
    with tempfile.TemporaryDirectory(prefix="msaf-acc-") as tmp:
        for entry in manifest.sets:
            cfg = SurveyConfig(
                device="cpu",
                tta=args.tta,
                tile=args.tile,
                overlap=args.overlap,
                precision=args.precision,
                scales=scales,
                exposure_floor=args.exposure_floor,
            )
            summary, mpix_per_s = survey_set(entry, args.model, manifest.classes, args.size, Path(tmp), args.seed, cfg)
            results[entry.name] = summary.to_json() | {"mpix_per_s": mpix_per_s, "photos": len(entry.val)}
    table = Table(
        title=f"survey accuracy on stitched {args.size}² mosaics of the validation photos "
        f"(views {scales_key(scales)}, thresholds {meta.thresholds_at(scales)})"
    )
    for column in ("set", "crack IoU", "F1", "tol-F1 (2 px)", "width px pred / true", "joint called crack", "Mpix/s"):
        table.add_column(column)
    for name, summary in results.items():
        crack = summary["classes"]["crack"]
        joint = summary["classes"].get("joint", {}).get("predicted_as", {}).get("crack", float("nan"))
        table.add_row(
            name,
            f"{crack['iou']:.3f}",
            f"{crack['f1']:.3f}",
            f"{crack['tol_f1']:.3f}",
            f"{crack['median_width_px']:.2f} / {crack['median_true_width_px']:.2f}",
            f"{joint:.3f}",
            f"{summary['mpix_per_s']:.2f}",
        )
    Console(width=150).print(table)
    if args.out:
        write_json(
            args.out,
            {
                "model": str(args.model),
                "size": args.size,
                "tta": args.tta,
                "tile": args.tile,
                "overlap": args.overlap,
                "precision": args.precision,
                "scales": list(scales),
                "thresholds": meta.thresholds_at(scales),
                "exposure_floor": meta.exposure_floor if args.exposure_floor is None else args.exposure_floor,
                "sets": results,
            },
        )


if __name__ == "__main__":
    main()
