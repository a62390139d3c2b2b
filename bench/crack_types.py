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
import rasterio
from affine import Affine
from PIL import Image
from rich.console import Console
from rich.table import Table

from pipeline.config import ReportConfig, SurveyConfig
from pipeline.data.manifest import ManifestSet, load_manifest
from pipeline.data.mosaic import cell_index
from pipeline.fsutil import write_json
from pipeline.report.crack_types import CrackType, StructureAxes
from pipeline.report.defects import DefectTables, build_defects
from pipeline.survey import run_survey
from pipeline.survey_accuracy import compose_val_mosaic

AXIS_DEG = 90.0  # the structure runs east-west
REACH_M = 0.003  # a true segment is found when a predicted crack lies within 3 px (1 mm pixels)


def typed(mask: Path, names: list[str], link_gap_m: float) -> DefectTables:
    """The report's defects of a mask, typed against the east-west axis (no image: types need none)."""
    cfg = ReportConfig(defect_classes=["crack"], non_defect_classes=[], link_gap_m=link_gap_m)
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
    survey_pieces: int
    survey_cracks: int  # pieces linked into cracks
    cracks_per_found_true_crack: float  # how many of the survey's cracks lie on each true crack it found
    joins_across_true_cracks: int  # survey cracks whose pieces lie on two or more true cracks
    pieces_on_no_true_crack: int  # the survey's false alarms (or cracks the truth does not draw)
    linked_cracks: int  # survey cracks of two or more pieces
    links_across_photos: int  # of those, cracks whose pieces lie in two composed photos (no real wall has that)


def photo_cells(entry: ManifestSet, size: int, seed: int) -> np.ndarray:
    """Which composed photo (cell of the mosaic's layout) each pixel of the set's mosaic shows."""
    pairs = entry.pairs("val")
    height, width = np.asarray(Image.open(pairs[0].image)).shape[:2]
    return cell_index(size, size, height, width, len(pairs), seed)


def agreement(truth: DefectTables, survey: DefectTables, cells: np.ndarray, transform: Affine) -> TypeAgreement:
    """Found and same-type shares of the true centreline length, the confusion by length (m), and
    how the survey's pieces were linked (``cells``: the mosaic's photo of each pixel)."""
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
    pieces = gpd.sjoin_nearest(
        survey.defects[["crack_id", "geometry"]],
        truth.defects[["defect_id", "geometry"]].rename(columns={"defect_id": "true_id"}),
        max_distance=REACH_M,
    )
    on_truth = pieces.dropna(subset=["true_id"])
    inverse = ~transform
    where = [inverse @ (x, y) for x, y in zip(survey.defects["centroid_x"], survey.defects["centroid_y"], strict=True)]
    photo = [int(cells[min(int(row), cells.shape[0] - 1), min(int(col), cells.shape[1] - 1)]) for col, row in where]
    linked = (
        survey.defects.assign(photo=photo)
        .groupby("crack_id")
        .agg(pieces=("photo", "size"), photos=("photo", "nunique"))
    )
    linked = linked[linked["pieces"] > 1]
    return TypeAgreement(
        true_length_m=round(total, 3),
        found_share=round(found_m / total, 4) if total else float("nan"),
        same_type_share=round(float(same["length_m"].sum()) / found_m, 4) if found_m else float("nan"),
        true_length_by_type_m={str(k): round(float(v), 3) for k, v in by_length.items()},
        confusion_m={str(k): {str(c): float(v) for c, v in row.items()} for k, row in confusion.iterrows()},
        true_cracks=len(truth.defects),
        survey_pieces=len(survey.defects),
        survey_cracks=int(survey.defects["crack_id"].nunique()),
        cracks_per_found_true_crack=round(float(on_truth.groupby("true_id")["crack_id"].nunique().mean()), 3),
        joins_across_true_cracks=int((on_truth.groupby("crack_id")["true_id"].nunique() > 1).sum()),
        pieces_on_no_true_crack=len(survey.defects) - int(on_truth.index.nunique()),
        linked_cracks=len(linked),
        links_across_photos=int((linked["photos"] > 1).sum()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--size", type=int, default=2048, help="mosaic side in px")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--sets", nargs="*", default=None, help="only these sets")
    parser.add_argument("--link-gaps", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.04], help="m")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = parser.parse_args()
    manifest = load_manifest(args.manifest)
    results: dict[str, dict[float, TypeAgreement]] = {}
    with tempfile.TemporaryDirectory(prefix="msaf-types-") as tmp:
        work = Path(tmp)
        for entry in manifest.sets:
            if entry.images is None or not entry.val or (args.sets and entry.name not in args.sets):
                continue
            ortho, truth, names = compose_val_mosaic(entry, manifest.classes, args.size, work, args.seed)
            survey_dir = work / f"{entry.name}_survey"
            run_survey(ortho, survey_dir, SurveyConfig(device="cpu", gsd_policy="ignore"), model_path=args.model)
            true_cracks = typed(truth, names, 0.0)  # the truth's own components: its cracks as drawn
            cells = photo_cells(entry, args.size, args.seed)
            with rasterio.open(truth) as ds:
                transform = ds.transform
            results[entry.name] = {
                gap: agreement(true_cracks, typed(survey_dir / "mask.tif", names, gap), cells, transform)
                for gap in args.link_gaps
            }
    table = Table(title=f"crack types through the survey ({args.size}² mosaics of the validation photos, axis E-W)")
    columns = ("set", "link gap mm", "true cracks", "survey pieces / cracks", "cracks per true crack")
    for column in (*columns, "joins across true cracks", "linked / across photos", "found", "same type"):
        table.add_column(column)
    for name, by_gap in results.items():
        for gap, result in by_gap.items():
            table.add_row(
                name,
                f"{gap * 1000:g}",
                str(result.true_cracks),
                f"{result.survey_pieces} / {result.survey_cracks}",
                f"{result.cracks_per_found_true_crack:.2f}",
                str(result.joins_across_true_cracks),
                f"{result.linked_cracks} / {result.links_across_photos}",
                f"{result.found_share:.3f}",
                f"{result.same_type_share:.3f}",
            )
    Console(width=160).print(table)
    for name, by_gap in results.items():
        for gap, result in by_gap.items():
            print(f"{name}, link gap {gap * 1000:g} mm: confusion (true type -> survey's type, m); true length by type")
            print(pd.DataFrame(result.confusion_m).T.to_string())
            print(result.true_length_by_type_m)
    if args.out:
        sets = {name: {f"{gap:g}": asdict(r) for gap, r in by_gap.items()} for name, by_gap in results.items()}
        write_json(args.out, {"model": str(args.model), "size": args.size, "axis_deg": AXIS_DEG, "sets": sets})


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
