"""Where does blur hide the cracks? The same ground defocused by a known amount.

Each set's validation photos are composed into an orthomosaic with exact truth (as in
`survey_accuracy.py`), blurred by a Gaussian of a known sigma (defocus; the photos' own blur comes
on top), given sensor noise (sigma 2 grey levels) and stored JPEG-compressed (q85), then surveyed
with the model. Per set and sigma: crack tolerant F1 and recall, and the blur the report's
sharpness check reads (``pipeline.report.sharpness.blur_at``, the median over a grid of windows on
the mosaic), so that ``condition.max_blur_px`` is set on the estimate where the crack map fails.

    python bench/blur_robustness.py --model pipeline/assets/msaf-dsnet.safetensors \
        --size 1024 --out metrics/blur_robustness.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from exposure_robustness import exposed
from rich.console import Console
from rich.table import Table

from pipeline.config import SurveyConfig
from pipeline.data.manifest import load_manifest
from pipeline.fsutil import write_json
from pipeline.report.sharpness import blur_at
from pipeline.survey import run_survey
from pipeline.survey_accuracy import compose_val_mosaic, score_mask

SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
READINGS = 8  # windows each way over the mosaic


def read_blur(image: Path) -> float:
    """The median of the sharpness check's readings over a READINGS x READINGS grid of the image."""
    with rasterio.open(image) as ds:
        height, width = ds.height, ds.width
    rows, cols = np.meshgrid(
        (np.arange(READINGS) + 0.5) * height / READINGS, (np.arange(READINGS) + 0.5) * width / READINGS
    )
    readings = blur_at(image, rows.ravel(), cols.ravel())
    return float(np.nanmedian(readings)) if np.isfinite(readings).any() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--size", type=int, default=1024, help="mosaic side in px")
    parser.add_argument("--sigmas", type=float, nargs="*", default=list(SIGMAS), help="blur added, px")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    manifest = load_manifest(args.manifest)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="msaf-blur-") as tmp:
        work = Path(tmp)
        for entry in manifest.sets:
            ortho, truth, names = compose_val_mosaic(entry, manifest.classes, args.size, work, args.seed)
            with rasterio.open(truth) as reference:
                expected = reference.read(1)
            for sigma in args.sigmas:
                source = exposed(ortho, 1.0, work / f"{entry.name}_{sigma}.tif", args.seed, blur_px=sigma)
                out = work / f"{entry.name}_{sigma}"
                run_survey(source, out, SurveyConfig(device="cpu", gsd_policy="ignore"), model_path=args.model)
                with rasterio.open(out / "mask.tif") as mask:
                    crack = score_mask(mask.read(1), expected, names).classes["crack"]
                results.setdefault(entry.name, {})[str(sigma)] = {
                    "tol_f1": crack.tol_f1,
                    "tol_recall": crack.tol_recall,
                    "tol_precision": crack.tol_precision,
                    "blur_read_px": read_blur(source),
                }
                print(entry.name, sigma, results[entry.name][str(sigma)], flush=True)
    table = Table(title=f"crack tolerant F1 / recall on {args.size}² validation mosaics blurred by a known sigma")
    for column in ("set", "blur added (px)", "blur read (px)", "tol-F1", "tol recall", "recall / sharp"):
        table.add_column(column)
    for name, rows in results.items():
        sharp = rows[str(args.sigmas[0])]["tol_recall"]
        for sigma, row in rows.items():
            table.add_row(
                name,
                sigma,
                f"{row['blur_read_px']:.2f}",
                f"{row['tol_f1']:.3f}",
                f"{row['tol_recall']:.3f}",
                f"{row['tol_recall'] / sharp:.2f}" if sharp else "",
            )
    Console(width=160).print(table)
    if args.out:
        write_json(args.out, {"model": str(args.model), "size": args.size, "sets": results})


if __name__ == "__main__":
    main()
