"""The prepared-data manifest: the validated, split list of labelled pairs a training run uses.

Written by the DVC ``prepare`` stage, read by ``train`` and ``evaluate``, so every stage sees
exactly the same split and the same files (identified by their fingerprint).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from pipeline.config import ClassSpec, DataConfig
from pipeline.data.labelled import Pair, class_lut, find_pairs, fingerprint, load_labelled, split_pairs
from pipeline.errors import MsafError
from pipeline.fsutil import write_json


class Manifest(BaseModel):
    """Validated split of a labelled folder pair."""

    images: Path
    masks: Path
    classes: list[ClassSpec]
    ignore_values: list[int]
    train: list[str]
    val: list[str]
    fingerprint: str
    pixels_per_class: dict[str, int]

    def pairs(self, split: str) -> list[Pair]:
        """The pairs of one split ('train', 'val' or 'all'), checked to still exist."""
        available = {p.stem: p for p in find_pairs(self.images, self.masks)}
        stems = self.train + self.val if split == "all" else getattr(self, split)
        missing = [s for s in stems if s not in available]
        if missing:
            raise MsafError(f"{len(missing)} image(s) of the manifest are gone from {self.images} "
                            f"(first: {missing[0]}); re-run the prepare stage")
        return [available[s] for s in stems]


def _portable(path: Path) -> Path:
    """Relative to the working directory (the project root) when inside it, so the manifest's
    bytes - and DVC's hash of it - do not depend on where the repository is checked out."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(path)


def build_manifest(data: DataConfig) -> Manifest:
    """Validate every pair (readable, sizes match, mask values mapped) and split deterministically."""
    pairs = find_pairs(data.images, data.masks)
    lut = class_lut(data.classes, data.ignore_values)
    counts = [0] * len(data.classes)
    for item in load_labelled(pairs, lut):
        for class_id in range(len(data.classes)):
            counts[class_id] += int((item.labels == class_id).sum())
    train, val = split_pairs(pairs, data.val_fraction, data.split_seed)
    return Manifest(
        images=_portable(data.images), masks=_portable(data.masks), classes=data.classes,
        ignore_values=data.ignore_values, train=[p.stem for p in train], val=[p.stem for p in val],
        fingerprint=fingerprint(pairs), pixels_per_class=dict(zip(data.class_names, counts, strict=True)),
    )


def save_manifest(manifest: Manifest, path: Path) -> None:
    write_json(path, json.loads(manifest.model_dump_json()))


def load_manifest(path: Path) -> Manifest:
    if not Path(path).is_file():
        raise MsafError(f"manifest not found: {path}; run `msaf prepare` (the DVC prepare stage) first")
    try:
        return Manifest.model_validate_json(Path(path).read_text())
    except ValidationError as exc:
        raise MsafError(f"{path}: not a valid manifest ({exc.errors()[0]['msg']}); re-run `msaf prepare`") from None
