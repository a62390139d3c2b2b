"""The prepared-data manifest: the validated, split list of labelled pairs of every data set.

Written by the DVC ``prepare`` stage, read by ``train`` and ``evaluate``, so every stage sees
exactly the same split and the same files (identified by their fingerprints).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from pipeline.class_ids import NO_CLASS, UNMAPPED
from pipeline.config import ClassSpec, DataConfig, DatasetConfig
from pipeline.data.labelled import (
    LabelledImage,
    Pair,
    find_pairs,
    fingerprint,
    load_labelled,
    split_pairs,
)
from pipeline.errors import MsafError
from pipeline.fsutil import write_json


def values_lut(values: dict[int, str], class_names: list[str], ignore_values: Sequence[int] = ()) -> np.ndarray:
    """Lookup table mask value -> class id for one data set's value mapping."""
    lut = np.full(256, UNMAPPED, dtype=np.uint8)
    for value, name in values.items():
        lut[value] = class_names.index(name)
    lut[list(ignore_values)] = NO_CLASS
    return lut


class ManifestSet(BaseModel):
    """One data set's validated split: photo stems, or for a geo set the names of its blocks."""

    name: str
    kind: Literal["photos", "geo"] = "photos"
    images: Path | None = None
    masks: Path | None = None
    labelset: Path | None = None
    block: int | None = None  # geo: block side on the label set's grid
    working_gsd_m: float | None = None  # geo: the GSD its blocks are read at
    values: dict[int, str]
    ignore_values: list[int]
    gsd_m: float | None
    weight: float
    train: list[str]
    val: list[str]
    fingerprint: str
    pixels_per_class: dict[str, int]

    def pairs(self, split: str) -> list[Pair]:
        """The pairs of one split ('train', 'val' or 'all'), checked to still exist."""
        if self.images is None or self.masks is None:
            raise MsafError(f"data set {self.name} is a label set on an orthomosaic, not image/mask pairs")
        available = {p.stem: p for p in find_pairs(self.images, self.masks)}
        stems = self.train + self.val if split == "all" else getattr(self, split)
        missing = [s for s in stems if s not in available]
        if missing:
            raise MsafError(
                f"{len(missing)} image(s) of the manifest are gone from {self.images} "
                f"(first: {missing[0]}); re-run the prepare stage"
            )
        return [available[s] for s in stems]

    def unlabelled(self, class_names: list[str]) -> tuple[int, ...]:
        """Class ids this set never labels (its background may hide them)."""
        labelled = set(self.values.values())
        return tuple(i for i, name in enumerate(class_names) if name not in labelled)

    def load(self, split: str, class_names: list[str]) -> list[LabelledImage]:
        """Decode and validate one split of this set, labels mapped to the model's class ids."""
        if self.kind == "geo" and self.labelset is not None and self.block is not None:
            from pipeline.data.geo import load_blocks  # rasterio: only label sets need it (not a GPU box's training)

            names = self.train + self.val if split == "all" else getattr(self, split)
            return load_blocks(self.labelset, names, self.block, self.working_gsd_m, class_names, source=self.name)
        lut = values_lut(self.values, class_names, self.ignore_values)
        return load_labelled(self.pairs(split), lut, source=self.name, unlabelled=self.unlabelled(class_names))


class Manifest(BaseModel):
    """Validated splits of every data set, with the classes they are mapped to."""

    classes: list[ClassSpec]
    sets: list[ManifestSet]
    fingerprint: str

    @property
    def class_names(self) -> list[str]:
        """Class names in class-id order."""
        return [c.name for c in self.classes]

    def pairs(self, split: str) -> list[Pair]:
        """The pairs of one split over all sets."""
        return [pair for s in self.sets for pair in s.pairs(split)]

    def load(self, split: str) -> dict[str, list[LabelledImage]]:
        """Decoded items of one split, per data set."""
        return {s.name: s.load(split, self.class_names) for s in self.sets}


def _portable(path: Path) -> Path:
    """Relative to the working directory (the project root) when inside it, so the manifest's
    bytes - and DVC's hash of it - do not depend on where the repository is checked out."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(path)


def _build_geo_set(spec: DatasetConfig, data: DataConfig) -> ManifestSet:
    """A label set's labelled blocks, split spatially; its orthomosaic must be the one it was labelled on.
    Its imports (rasterio, shapely) are here: photo sets train without them (the GPU image lacks them)."""
    from pipeline import fingerprint
    from pipeline.data.geo import (
        block_name,
        class_map,
        input_block,
        labelled_blocks,
        labelset_fingerprint,
        split_blocks,
    )
    from pipeline.labels.labelset import read_labelset
    from pipeline.raster.trust import locate

    assert spec.labelset is not None
    record = read_labelset(spec.labelset)
    class_map(record, data.class_names)  # its classes are the model's (by name)
    location = locate(record.image)
    if location.kind == "file" and not fingerprint.matches(location.text, record.image_fingerprint):
        raise MsafError(
            f"{record.image} differs from the orthomosaic label set {spec.labelset} was made on "
            "(fingerprint); rebuild the label set with `msaf labels`"
        )
    block = input_block(record, spec.block_px, data.gsd_m)
    boxes = labelled_blocks(spec.labelset, block)
    if not boxes:
        raise MsafError(f"label set {spec.labelset} holds no labels (labels.tif is all 255)")
    train, val = split_blocks(boxes, block, spec.val_fraction or data.val_fraction, data.split_seed)
    counts = {name: 0 for name in data.class_names}
    for name, count in record.pixels.items():
        if name in counts:
            counts[name] = count
    return ManifestSet(
        name=spec.name,
        kind="geo",
        labelset=_portable(spec.labelset),
        block=block,
        working_gsd_m=data.gsd_m,
        values={index: name for index, name in enumerate(record.classes)},
        ignore_values=[],
        gsd_m=record.gsd_m,
        weight=spec.weight,
        train=[block_name(b) for b in train],
        val=[block_name(b) for b in val],
        fingerprint=labelset_fingerprint(spec.labelset, record),
        pixels_per_class=counts,
    )


def _build_set(spec: DatasetConfig, data: DataConfig) -> ManifestSet:
    """Validate every pair of one set (readable, sizes match, mask values mapped) and split it."""
    if spec.kind == "geo":
        return _build_geo_set(spec, data)
    assert spec.images is not None and spec.masks is not None
    class_names, seed = data.class_names, data.split_seed
    pairs = find_pairs(spec.images, spec.masks)
    values = spec.values or {}
    lut = values_lut(values, class_names, spec.ignore_values)
    counts = np.zeros(len(class_names), np.int64)
    for item in load_labelled(pairs, lut):
        counts += np.bincount(item.labels.ravel(), minlength=256)[: len(class_names)]
    pattern = spec.photo_pattern if spec.split == "by_photo" else None
    train, val = split_pairs(pairs, spec.val_fraction or 0.2, seed, pattern)
    return ManifestSet(
        name=spec.name,
        images=_portable(spec.images),
        masks=_portable(spec.masks),
        values=values,
        ignore_values=spec.ignore_values,
        gsd_m=spec.gsd_m,
        weight=spec.weight,
        train=[p.stem for p in train],
        val=[p.stem for p in val],
        fingerprint=fingerprint(pairs),
        pixels_per_class={name: int(c) for name, c in zip(class_names, counts, strict=True)},
    )


def build_manifest(data: DataConfig) -> Manifest:
    """Validate and split every data set deterministically (``data.split_seed``)."""
    sets = [_build_set(spec, data) for spec in data.datasets]
    combined = (
        sets[0].fingerprint
        if len(sets) == 1
        else hashlib.sha256("".join(f"{s.name}:{s.fingerprint}" for s in sets).encode()).hexdigest()
    )
    return Manifest(classes=data.classes, sets=sets, fingerprint=combined)


def save_manifest(manifest: Manifest, path: Path) -> None:
    """Write the manifest as sorted, pretty JSON (stable bytes for DVC; a photo set's manifest has no
    geo fields, so manifests of photo sets keep their bytes)."""
    write_json(path, json.loads(manifest.model_dump_json(exclude_defaults=True)))


def load_manifest(path: Path) -> Manifest:
    """Read a manifest written by ``save_manifest``; a missing or foreign file is one clear line."""
    if not Path(path).is_file():
        raise MsafError(f"manifest not found: {path}; run `msaf prepare` (the DVC prepare stage) first")
    try:
        return Manifest.model_validate_json(Path(path).read_text())
    except ValidationError as exc:
        raise MsafError(f"{path}: not a valid manifest ({exc.errors()[0]['msg']}); re-run `msaf prepare`") from None
