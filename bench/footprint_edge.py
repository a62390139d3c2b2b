"""Does the footprint edge read as a crack? Flat mean-colour fill vs the per-tile mirror fill.

A mosaic of one set's *validation* photos (never trained on) with an irregular nodata footprint is
surveyed twice with the same model: once with nodata filled by the training mean (the old rule),
once with the engine's mirror fill. Prints crack pixels within 4/8/16 px of the footprint edge
(predicted, true) and the mosaic's 2-px tolerant crack F1.

    python bench/footprint_edge.py --model pipeline/assets/msaf-dsnet.safetensors \
        --manifest data/prepared/manifest.json --set crackforest --size 1024
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch
from scipy import ndimage

import pipeline.inference.runner as runner_module
from pipeline.config import DataConfig, SurveyConfig
from pipeline.data.manifest import load_manifest
from pipeline.data.mosaic import compose_mosaic
from pipeline.survey import run_survey


def flat_fill(image: torch.Tensor, valid: np.ndarray, fallback: torch.Tensor) -> torch.Tensor:
    """The old rule: nodata = the training mean colour."""
    return torch.where(torch.from_numpy(valid)[None], image, fallback.round().view(3, 1, 1).expand_as(image))


def score(mask_path: Path, truth_path: Path) -> dict[str, float]:
    with rasterio.open(mask_path) as mask, rasterio.open(truth_path) as truth:
        pred, labels = mask.read(1), truth.read(1)
    valid = pred != 255
    edge_distance = ndimage.distance_transform_edt(valid)
    row: dict[str, float] = {}
    for band in (4, 8, 16):
        near = valid & (edge_distance <= band)
        row[f"pred<={band}"], row[f"true<={band}"] = int(((pred == 1) & near).sum()), int(((labels == 1) & near).sum())
    predicted, true = (pred == 1) & valid, (labels == 1) & valid
    precision = (predicted & (ndimage.distance_transform_edt(~true) <= 2)).sum() / max(predicted.sum(), 1)
    recall = (true & (ndimage.distance_transform_edt(~predicted) <= 2)).sum() / max(true.sum(), 1)
    row["tol_f1"] = float(2 * precision * recall / max(precision + recall, 1e-12))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("pipeline/assets/msaf-dsnet.safetensors"))
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--set", default="crackforest")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    entry = next(e for e in load_manifest(args.manifest).sets if e.name == args.set)
    work = Path(tempfile.mkdtemp(prefix="msaf-edge-"))
    for sub in ("images", "masks"):
        (work / sub).mkdir()
    for pair in entry.pairs("val"):
        (work / "images" / pair.image.name).symlink_to(pair.image.resolve())
        (work / "masks" / pair.mask.name).symlink_to(pair.mask.resolve())
    ortho, truth = work / "ortho.tif", work / "truth.tif"
    compose_mosaic(
        work / "images",
        work / "masks",
        ortho,
        truth,
        args.size,
        args.size,
        0.001,
        "EPSG:32633",
        DataConfig().classes,
        compress="deflate",
        footprint=True,
        seed=args.seed,
    )
    mirror = runner_module.mirror_fill
    print(f"{len(entry.pairs('val'))} validation photos of {args.set}, {args.size}² mosaic, model {args.model}")
    for name, fill in (("flat mean", flat_fill), ("mirror", mirror)):
        runner_module.mirror_fill = fill
        run_survey(ortho, work / name, SurveyConfig(device="cpu", gsd_policy="ignore"), model_path=args.model)
        print(
            f"{name:>9}: "
            + "  ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in score(work / name / "mask.tif", truth).items()
            )
        )
    runner_module.mirror_fill = mirror


if __name__ == "__main__":
    main()
