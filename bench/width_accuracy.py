"""Crack-width accuracy of the report on synthetic photographs with real optics (bench/crack_optics.py).

Each survey is written as a GeoTIFF + mask and measured by the report's own code (build_defects),
each defect matched to its true crack; errors in pixels by width bin, per PSF and mask habit.
Prints a Markdown table and writes JSON (--out).

    .venv/bin/python bench/width_accuracy.py --out metrics/width_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.crack_optics import GSD_M, Survey, crack_at, standard_surveys, write_survey
from pipeline.config import ReportConfig
from pipeline.report.defects import build_defects

BINS = (("<= 2 px", 0.0, 2.0), ("2-8 px", 2.0, 8.0))


def measure(survey: Survey, folder: Path) -> pd.DataFrame:
    """One row per true crack: its width and what the report measured (NaN: not found or unmeasured)."""
    cracks = write_survey(survey, folder)
    tables = build_defects(
        folder / "survey" / "mask.tif", None, ["background", "crack"], ReportConfig(), folder / "ortho.tif"
    )
    rows = {
        c.strip: {
            "survey": survey.name,
            "psf": survey.psf_sigma_px,
            "mask": survey.mask_margin_px,
            "true_px": c.width_px,
            "curved": c.curved,
            "measured_px": np.nan,
            "method": "missing",
        }
        for c in cracks
    }
    for _, defect in tables.defects.iterrows():
        crack = crack_at(cracks, defect["centroid_y"])
        rows[crack.strip]["measured_px"] = defect["mean_width_mm"] / (GSD_M * 1000)
        rows[crack.strip]["method"] = defect["width_method"]
    return pd.DataFrame(list(rows.values()))


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean abs. error, bias and share within 0.25 px per width bin and (PSF, mask) variant."""
    out = []
    for (psf, mask), group in results.groupby(["psf", "mask"]):
        for label, low, high in BINS:
            sel = group[(group.true_px > low) & (group.true_px <= high)]
            error = sel.measured_px - sel.true_px
            out.append(
                {
                    "psf": psf,
                    "mask": mask,
                    "bin": label,
                    "n": len(sel),
                    "measured": int(error.notna().sum()),
                    "mae_px": float(error.abs().mean()),
                    "bias_px": float(error.mean()),
                    "within_0.25": float((error.abs() <= 0.25).mean()),
                }
            )
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rows", type=Path, help="per-crack CSV")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = pd.concat([measure(s, Path(tmp) / s.name) for s in standard_surveys()], ignore_index=True)
    table = summarise(results)
    print(table.to_markdown(index=False, floatfmt=".2f"))
    if args.rows:
        results.to_csv(args.rows, index=False)
    if args.out:
        args.out.write_text(json.dumps(table.to_dict(orient="records"), indent=1) + "\n")


if __name__ == "__main__":
    main()
