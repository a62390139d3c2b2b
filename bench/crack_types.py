"""Do crack types survive the model? Each set's validation photos composed into a stitched 1-mm
orthomosaic (as `bench/survey_accuracy.py`), surveyed with the model, and every crack typed twice
with the report's own code against one structure axis (east-west): from the truth raster and from
the survey's mask. Along the true centrelines (20-px segments), the share of length the survey
found (a predicted crack within 3 px) and, of that, the share it gave the true crack's type; with
the length-weighted confusion of types.

    python bench/crack_types.py --model pipeline/assets/msaf-dsnet.safetensors \
        --manifest data/prepared/manifest.json --size 2048 --out metrics/crack_types.json
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from pipeline.config import ReportConfig, SurveyConfig
from pipeline.data.manifest import load_manifest
from pipeline.fsutil import write_json
from pipeline.report.crack_types import CrackType, StructureAxes
from pipeline.report.defects import DefectTables, build_defects
from pipeline.survey import run_survey
from pipeline.survey_accuracy import compose_val_mosaic

AXIS_DEG = 90.0  # the structure runs east-west
REACH_M = 0.003  # a true segment is found when a predicted crack lies within 3 px (1 mm pixels)


def typed(mask: Path, names: list[str]) -> DefectTables:
    """The report's defects of a mask, typed against the east-west axis (no image: types need none)."""
    cfg = ReportConfig(defect_classes=["crack"], non_defect_classes=[])  # specks below min_area_m2 dropped
    return build_defects(mask, None, names, cfg, None, StructureAxes.of(None, AXIS_DEG))


@dataclass(frozen=True)
class TypeAgreement:
    """How the survey's crack types compare with the truth's along the true centrelines."""

    true_length_m: float
    found_share: float  # of the true length, near a predicted crack
    same_type_share: float  # of the found length, given the true crack's type
    true_length_by_type_m: dict[str, float]
    confusion_m: dict[str, dict[str, float]]  # true type -> survey's type -> length
    true_cracks: int
    survey_cracks: int


def agreement(truth: DefectTables, survey: DefectTables) -> TypeAgreement:
    """Found and same-type shares of the true centreline length, and the confusion by length (m)."""
    segments = truth.centerlines.merge(truth.defects[["defect_id", "crack_type"]], on="defect_id")
    predicted = survey.defects[["crack_type", "geometry"]].rename(columns={"crack_type": "found_type"})
    points = gpd.GeoDataFrame(
        segments[["crack_type", "length_m"]], geometry=segments.geometry.interpolate(0.5, normalized=True)
    )
    near = gpd.sjoin_nearest(points, predicted, how="left", max_distance=REACH_M, distance_col="distance")
    near = near[~near.index.duplicated()]  # a tie between two predicted cracks: the first
    total = float(near["length_m"].sum())
    found = near[near["found_type"].notna()]
    same = found[found["found_type"] == found["crack_type"]]
    kinds = [k.value for k in CrackType if k is not CrackType.LINEAR]
    confusion = (
        found.pivot_table(index="crack_type", columns="found_type", values="length_m", aggfunc="sum", fill_value=0)
        .reindex(index=kinds, columns=kinds, fill_value=0)
        .round(4)
    )
    by_length = near.groupby("crack_type")["length_m"].sum()
    found_m = float(found["length_m"].sum())
    return TypeAgreement(
        true_length_m=round(total, 3),
        found_share=round(found_m / total, 4) if total else float("nan"),
        same_type_share=round(float(same["length_m"].sum()) / found_m, 4) if found_m else float("nan"),
        true_length_by_type_m={str(k): round(float(v), 3) for k, v in by_length.items()},
        confusion_m={str(k): {str(c): float(v) for c, v in row.items()} for k, row in confusion.iterrows()},
        true_cracks=len(truth.defects),
        survey_cracks=len(survey.defects),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--size", type=int, default=2048, help="mosaic side in px")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--sets", nargs="*", default=None, help="only these sets")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = parser.parse_args()
    manifest = load_manifest(args.manifest)
    results: dict[str, TypeAgreement] = {}
    with tempfile.TemporaryDirectory(prefix="msaf-types-") as tmp:
        work = Path(tmp)
        for entry in manifest.sets:
            if entry.images is None or not entry.val or (args.sets and entry.name not in args.sets):
                continue
            ortho, truth, names = compose_val_mosaic(entry, manifest.classes, args.size, work, args.seed)
            survey_dir = work / f"{entry.name}_survey"
            run_survey(ortho, survey_dir, SurveyConfig(device="cpu", gsd_policy="ignore"), model_path=args.model)
            results[entry.name] = agreement(typed(truth, names), typed(survey_dir / "mask.tif", names))
    table = Table(title=f"crack types through the survey ({args.size}² mosaics of the validation photos, axis E-W)")
    for column in ("set", "true cracks / survey's", "true length m", "found", "same type", "true length by type m"):
        table.add_column(column)
    for name, result in results.items():
        table.add_row(
            name,
            f"{result.true_cracks} / {result.survey_cracks}",
            f"{result.true_length_m:.2f}",
            f"{result.found_share:.3f}",
            f"{result.same_type_share:.3f}",
            ", ".join(f"{k} {v:.2f}" for k, v in result.true_length_by_type_m.items()),
        )
    Console(width=160).print(table)
    for name, result in results.items():
        print(name, "confusion (true type -> survey's type, m):")
        print(pd.DataFrame(result.confusion_m).T.to_string())
    if args.out:
        sets = {name: asdict(result) for name, result in results.items()}
        write_json(args.out, {"model": str(args.model), "size": args.size, "axis_deg": AXIS_DEG, "sets": sets})


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
