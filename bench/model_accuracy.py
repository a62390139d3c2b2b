"""Per-set validation accuracy of any checkpoints on the prepared manifest, side by side.

Labels are mapped to each model's classes by name; a class the model does not know (joint, for
the first release's crack-only model) counts as background, so an old model is judged on what it
should not call crack. Each model uses its own decision rule (argmax or its calibrated thresholds).

    python bench/model_accuracy.py --manifest data/prepared/manifest.json \
        MODEL.safetensors [MODEL2.safetensors ...] [--out metrics/model_comparison.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from pipeline.checkpoint import load_checkpoint
from pipeline.data import LabelledImage
from pipeline.data.manifest import load_manifest
from pipeline.evaluate import evaluate_groups, predict_items
from pipeline.fsutil import write_json


def relabel(items: list[LabelledImage], names: list[str], model_names: list[str]) -> list[LabelledImage]:
    """Class ids of the manifest -> the model's, by name; unknown classes become background."""
    lut = np.zeros(256, np.uint8)
    lut[255] = 255
    for i, name in enumerate(names):
        lut[i] = model_names.index(name) if name in model_names else 0
    return [LabelledImage(it.stem, it.image, lut[it.labels], it.source, it.unlabelled) for it in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    manifest = load_manifest(args.manifest)
    sets = manifest.load(args.split)
    table = Table(title=f"crack class per data set, {args.split} split (2-px tolerance)")
    for column in (
        "model",
        "set",
        "threshold",
        "IoU",
        "F1",
        "tol-F1",
        "tol P / R",
        "width px pred / true",
        "joint px called crack",
    ):
        table.add_column(column)
    results = {}
    for path in args.models:
        model, meta = load_checkpoint(path, torch.device("cpu"))
        groups = {
            name: predict_items(
                model,
                relabel(items, manifest.class_names, meta.class_names),
                meta.mean,
                meta.std,
                torch.device("cpu"),
                exposure_floor=meta.exposure_floor,
            )
            for name, items in sets.items()
        }
        summary = evaluate_groups(groups, meta.class_names, 2, meta.thresholds, ["crack"]).to_json()
        results[path.name] = summary
        for name, part in summary["sets"].items():
            crack = part["classes"]["crack"]
            joint_px = (
                sum(int((it.labels == manifest.class_names.index("joint")).sum()) for it in sets[name])
                if "joint" in manifest.class_names
                else 0
            )
            called = part["classes"].get("joint", {}).get("predicted_as", {}).get("crack")
            if called is None and joint_px:  # a model without a joint class: joint pixels were relabelled background
                joints = [(p, it) for (p, _), it in zip(groups[name], sets[name], strict=True)]
                hits = sum(int(((meta_decide(p, meta) == 1) & (it.labels == 2)).sum()) for p, it in joints)
                called = hits / joint_px
            table.add_row(
                path.name,
                name,
                str(meta.thresholds.get("crack", "argmax")),
                f"{crack['iou']:.3f}",
                f"{crack['f1']:.3f}",
                f"{crack['tol_f1']:.3f}",
                f"{crack['tol_precision']:.3f} / {crack['tol_recall']:.3f}",
                f"{crack['median_width_px']:.2f} / {crack['median_true_width_px']:.2f}",
                "n/a" if called is None else f"{called:.3f}",
            )
            part["joint_called_crack"] = called
        results[path.name]["score"] = summary["score"]
    Console(width=160).print(table)
    if args.out:
        write_json(args.out, results)


def meta_decide(probs: np.ndarray, meta) -> np.ndarray:
    from pipeline.inference.decision import decide

    return decide(torch.from_numpy(probs.astype(np.float32)), meta.decision).numpy()


if __name__ == "__main__":
    main()
