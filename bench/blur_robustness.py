"""Where does blur hide the cracks? The same ground defocused by a known amount.

Each set's validation photos are composed into an orthomosaic with exact truth (as in
`survey_accuracy.py`), blurred by a Gaussian of a known sigma (defocus; the photos' own blur comes
on top), given sensor noise (sigma 2 grey levels) and stored JPEG-compressed (q85), then surveyed
with the model. Per set and sigma: crack tolerant F1 and recall, and the blur the report's
sharpness check reads (``pipeline.report.sharpness.blur_at``, the median over a grid of windows on
the mosaic, and the shares of those windows it calls too blurred and too plain to tell), so that
``condition.max_blur_px`` is set on the estimate where the crack map fails.

    python bench/blur_robustness.py --model pipeline/assets/msaf-dsnet.safetensors \
        --size 1024 --out metrics/blur_robustness.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from exposure_robustness import exposed, surveyed_levels
from rich.console import Console
from rich.table import Table

from pipeline.config import ConditionConfig, SurveyConfig
from pipeline.data.manifest import load_manifest
from pipeline.fsutil import write_json
from pipeline.report.sharpness import blur_at, blur_per_cell

SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0)
READINGS = 8  # windows each way over the mosaic (128 px: a report's window in a 0.5 m cell at 1 mm)


def read_blur(image: Path, limit: float) -> dict[str, float]:
    """The sharpness check over a READINGS x READINGS grid of cells of the image, as a report reads
    its condition cells: the median of the single windows' readings, the shares of those windows over
    ``limit`` and too plain to tell, and the share of cells the report calls too blurred (each cell
    the median of its own and its neighbours' windows)."""
    with rasterio.open(image) as ds:
        height, width = ds.height, ds.width
    rows, cols = (np.arange(READINGS) + 0.5) * height / READINGS, (np.arange(READINGS) + 0.5) * width / READINGS
    grid_rows, grid_cols = np.meshgrid(rows, cols, indexing="ij")
    readings = blur_at(image, grid_rows.ravel(), grid_cols.ravel())
    read = np.isfinite(readings)
    cell_px = min(height, width) / READINGS
    cells = blur_per_cell(image, rows, cols, np.ones((READINGS, READINGS), bool), cell_px)
    return {
        "blur_read_px": float(np.median(readings[read])) if read.any() else float("nan"),
        "window_over_limit_share": float(np.mean(readings[read] > limit)) if read.any() else float("nan"),
        "window_too_plain_share": float(np.mean(~read)),
        "too_blurred_share": float(np.mean(cells > limit)),
        "too_plain_share": float(np.mean(np.isnan(cells))),
    }


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
    limit = ConditionConfig().max_blur_px
    with tempfile.TemporaryDirectory(prefix="msaf-blur-") as tmp:
        levels = surveyed_levels(
            manifest,
            args.size,
            args.seed,
            args.sigmas,
            lambda ortho, sigma, out: exposed(ortho, 1.0, out, args.seed, blur_px=sigma),
            args.model,
            SurveyConfig(device="cpu", gsd_policy="ignore"),
            Path(tmp),
        )
        for surveyed in levels:
            results.setdefault(surveyed.set_name, {})[str(surveyed.level)] = row = {
                "tol_f1": surveyed.crack.tol_f1,
                "tol_recall": surveyed.crack.tol_recall,
                "tol_precision": surveyed.crack.tol_precision,
                **read_blur(surveyed.source, limit),
            }
            print(surveyed.set_name, surveyed.level, row, flush=True)
    table = Table(title=f"crack tolerant F1 / recall on {args.size}² validation mosaics blurred by a known sigma")
    columns = (
        "set",
        "blur added (px)",
        "blur read (px)",
        "windows over the limit",
        "cells too blurred",
        "cells too plain",
        "tol-F1",
        "tol recall",
        "recall / sharp",
    )
    for column in columns:
        table.add_column(column)
    for name, rows in results.items():
        sharp = rows[str(args.sigmas[0])]["tol_recall"]
        for sigma, row in rows.items():
            table.add_row(
                name,
                sigma,
                f"{row['blur_read_px']:.2f}",
                f"{row['window_over_limit_share']:.2f}",
                f"{row['too_blurred_share']:.2f}",
                f"{row['too_plain_share']:.2f}",
                f"{row['tol_f1']:.3f}",
                f"{row['tol_recall']:.3f}",
                f"{row['tol_recall'] / sharp:.2f}" if sharp else "",
            )
    Console(width=160).print(table)
    if args.out:
        write_json(args.out, {"model": str(args.model), "size": args.size, "sets": results})


if __name__ == "__main__":
    main()
