"""Teach it your bridges: fine-tuning the shipped model on a structure it never saw, against the same
steps from scratch.

A masonry wall the shipped model never trained on (the masonry set's *training* photos, composed
into a 1-mm orthomosaic) is labelled as a user would: its cracks drawn as lines with widths
(`msaf labels rasterize`), mortar joints left unlabelled. The geo set is split spatially; each arm
trains the same steps on its training blocks (the shipped model as `train.init` vs random weights),
and all three models (the shipped one untouched, fine-tuned, from scratch) are scored on the
held-back blocks: 2-px tolerant crack F1 with each model's own threshold.

    python bench/finetune.py --epochs 2 --steps 40 --out metrics/finetune.json
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from pipeline.config import DataConfig, ReportConfig, load_params
from pipeline.data.manifest import load_manifest
from pipeline.data.mosaic import compose_mosaic
from pipeline.evaluate import evaluate_sets
from pipeline.fsutil import write_json
from pipeline.labels.rasterize import rasterize_labels
from pipeline.report.defects import build_defects
from pipeline.training.trainer import load_training_data, train_model

SHIPPED = Path("pipeline/assets/msaf-dsnet.safetensors")


def masonry_site(root: Path, manifest: Path, size: int) -> Path:
    """The masonry training photos as a labelled orthomosaic: a geo label set drawn from its truth."""
    masonry = next(s for s in load_manifest(manifest).sets if s.name == "masonry")
    photos = root / "photos"
    for sub in ("images", "masks"):
        (photos / sub).mkdir(parents=True)
    for pair in masonry.pairs("train"):
        shutil.copy(pair.image, photos / "images" / pair.image.name)
        shutil.copy(pair.mask, photos / "masks" / pair.mask.name)
    ortho, truth = root / "wall.tif", root / "wall_truth.tif"
    two = ["background", "crack"]
    compose_mosaic(
        photos / "images",
        photos / "masks",
        ortho,
        truth,
        size,
        size,
        0.001,
        "EPSG:32633",
        DataConfig().classes,
        seed=11,
    )
    lines = build_defects(truth, None, two, ReportConfig(min_area_m2=0)).centerlines
    lines.assign(**{"class": "crack"}).to_file(root / "drawn.gpkg", engine="pyogrio")
    rasterize_labels(ortho, root / "drawn.gpkg", root / "site", two, [])  # joints unlabelled: partial labels
    return root / "site"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--model", type=Path, default=SHIPPED)
    parser.add_argument("--size", type=int, default=1536, help="orthomosaic side in px at 1 mm")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch")
    parser.add_argument("--preset", default="dsnet")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        site = masonry_site(root, args.manifest, args.size)
        rows = {}
        for arm, init, lr in (("fine-tuned", str(args.model.resolve()), 3e-4), ("from scratch", "none", 3e-3)):
            folder = root / arm.replace(" ", "-")
            folder.mkdir()
            params = {
                "data": {
                    "sets": [
                        {"name": "site", "kind": "geo", "labelset": str(site), "block_px": 256, "val_fraction": 0.25}
                    ]
                },
                "model": {"preset": args.preset},
                "train": {
                    "out": str(folder / "model.safetensors"),
                    "epochs": args.epochs,
                    "steps_per_epoch": args.steps,
                    "batch_size": 8,
                    "crop_size": 256,
                    "lr": lr,
                    "device": "cpu",
                    "focus": 0.5,
                    "ema_decay": 0.99,
                    "calibrate": ["crack"],
                    "init": init,
                    "loss": {"dice_weight": 0.5, "skeleton_weight": 0.5},
                },
            }
            (folder / "params.yaml").write_text(yaml.safe_dump(params))
            loaded = load_params(folder / "params.yaml")
            started = time.perf_counter()
            result = train_model(loaded)
            minutes = (time.perf_counter() - started) / 60
            rows[arm] = {"checkpoint": result.checkpoint, "minutes": minutes}
        data = load_training_data(loaded)
        results = {}
        for arm, checkpoint in (("shipped, untouched", args.model), *((a, r["checkpoint"]) for a, r in rows.items())):
            summary = evaluate_sets(checkpoint, data.val_sets, device="cpu").sets["site"]
            results[arm] = {
                "tol_f1": summary.class_tol_f1("crack"),
                "f1": summary.classes["crack"].f1,
                "minutes": rows.get(arm, {}).get("minutes"),
            }
        blocks = {"train": len(data.train_sets["site"]), "val": len(data.val_sets["site"])}

    table = Table(
        title=f"masonry wall {args.size}² at 1 mm, {args.epochs} x {args.steps} steps of 8 crops, blocks {blocks}"
    )
    for column in ("model", "crack tol-F1 (held-back blocks)", "crack F1", "training minutes"):
        table.add_column(column)
    for arm, r in results.items():
        table.add_row(
            arm, f"{r['tol_f1']:.3f}", f"{r['f1']:.3f}", "" if r["minutes"] is None else f"{r['minutes']:.1f}"
        )
    console.print(table)
    if args.out:
        write_json(
            args.out,
            {"size": args.size, "epochs": args.epochs, "steps": args.steps, "blocks": blocks, "results": results},
        )


if __name__ == "__main__":
    main()
