"""Accuracy through the real survey: each data set's validation photos composed into a stitched,
georeferenced orthomosaic, surveyed tile by tile with `run_survey`, the mask scored against the
mosaic's exact truth raster (per set: IoU, F1, 2-px tolerant F1, median crack width, joint pixels
called crack).

    python bench/survey_accuracy.py --model pipeline/assets/msaf-dsnet.safetensors \
        --manifest data/prepared/manifest.json --size 2048 --out metrics/survey_accuracy.json
    python bench/survey_accuracy.py --model ... --tta     # the same with flip test-time augmentation
    python bench/survey_accuracy.py --model ... --tile 1024 --overlap 64   # larger tiles (a GPU's choice)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rich.console import Console
from rich.table import Table

from pipeline.checkpoint import read_metadata
from pipeline.config import ClassSpec, SurveyConfig
from pipeline.data.manifest import ManifestSet, load_manifest
from pipeline.data.mosaic import compose_mosaic
from pipeline.fsutil import write_json
from pipeline.metrics import SegmentationMetrics
from pipeline.survey import run_survey


def _val_folder(entry: ManifestSet, root: Path) -> Path:
    """The set's validation pairs, linked into images/ and masks/ (the mosaic reads folders)."""
    folder = root / entry.name
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for pair in entry.pairs("val"):
        (folder / "images" / pair.image.name).symlink_to(pair.image.resolve())
        (folder / "masks" / pair.mask.name).symlink_to(pair.mask.resolve())
    return folder


def compose_val_mosaic(
    entry: ManifestSet, classes: list, size: int, work: Path, seed: int
) -> tuple[Path, Path, list[str]]:
    """One set's validation photos as a stitched 1-mm orthomosaic with its exact truth raster.

    The truth raster holds the model's class ids, mapped by this set's values; a class the set
    never labels gets a value no mask holds (a ClassSpec needs one).
    """
    folder = _val_folder(entry, work)
    ortho, truth = work / f"{entry.name}.tif", work / f"{entry.name}_truth.tif"
    names = [c.name for c in classes]
    specs = [
        ClassSpec(name=n, values=[v for v, m in entry.values.items() if m == n] or [250 - i])
        for i, n in enumerate(names)
    ]
    compose_mosaic(
        folder / "images",
        folder / "masks",
        ortho,
        truth,
        size,
        size,
        entry.gsd_m or 0.001,
        "EPSG:32633",
        specs,
        compress="deflate",
        seed=seed,
    )
    return ortho, truth, names


def score_mask(predicted: np.ndarray, expected: np.ndarray, names: list[str]) -> dict:
    """IoU, F1, 2-px tolerant F1 and widths of a mask against the truth on the same grid."""
    metrics = SegmentationMetrics(names, 2, width_classes=[names.index("crack")])
    valid = expected != 255
    metrics.update(np.where(valid, predicted, 255).astype(np.uint8), expected)
    return metrics.compute().to_json()


def survey_set(
    entry: ManifestSet,
    model: Path,
    classes: list,
    size: int,
    work: Path,
    seed: int,
    tta: bool = False,
    tile: int | None = None,
    overlap: int | None = None,
) -> dict:
    """Mosaic one set's validation photos, survey it, score the mask against the truth raster."""
    ortho, truth, names = compose_val_mosaic(entry, classes, size, work, seed)
    cfg = SurveyConfig(device="cpu", tta=tta, tile=tile, overlap=overlap)
    record = run_survey(ortho, work / f"{entry.name}_survey", cfg, model_path=model)
    with rasterio.open(work / f"{entry.name}_survey" / "mask.tif") as mask, rasterio.open(truth) as reference:
        summary = score_mask(mask.read(1), reference.read(1), names)
    summary["mpix_per_s"] = record.throughput_mpix_s.end_to_end
    summary["photos"] = len(entry.val)
    return summary


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
    args = parser.parse_args()

    manifest = load_manifest(args.manifest)
    meta = read_metadata(args.model)
    results = {}
    with tempfile.TemporaryDirectory(prefix="msaf-acc-") as tmp:
        for entry in manifest.sets:
            results[entry.name] = survey_set(
                entry, args.model, manifest.classes, args.size, Path(tmp), args.seed, args.tta, args.tile, args.overlap
            )
    table = Table(
        title=f"survey accuracy on stitched {args.size}² mosaics of the validation photos "
        f"(model thresholds {meta.thresholds})"
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
                "thresholds": meta.thresholds,
                "sets": results,
            },
        )


if __name__ == "__main__":
    main()
