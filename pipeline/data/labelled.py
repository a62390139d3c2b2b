"""Find, validate and load image/mask pairs; every expected mistake is one clear MsafError."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.class_ids import NO_CLASS, UNMAPPED
from pipeline.config import ClassSpec
from pipeline.errors import MsafError
from pipeline.fsutil import file_digest

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
MASK_SUFFIXES = {".png", ".tif", ".tiff", ".bmp"}


@dataclass(frozen=True)
class Pair:
    """An image and its mask, matched by file stem."""

    stem: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class LabelledImage:
    """A decoded training example: RGB uint8 (H, W, 3) and class ids uint8 (H, W).

    ``unlabelled`` are the class ids its data set never labels: its background may hide them.
    """

    stem: str
    image: np.ndarray
    labels: np.ndarray
    source: str = ""
    unlabelled: tuple[int, ...] = ()


def _by_stem(folder: Path, suffixes: set[str], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise MsafError(f"{what} folder not found: {folder}")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            if path.stem in files:
                raise MsafError(f"two {what} files share the name {path.stem!r}: {files[path.stem].name}, {path.name}")
            files[path.stem] = path
    if not files:
        raise MsafError(f"{what} folder is empty: {folder} (expected {', '.join(sorted(suffixes))} files)")
    return files


def find_pairs(images_dir: Path, masks_dir: Path) -> list[Pair]:
    """Pair images and masks by stem; an image without mask (or the reverse) is an error."""
    images = _by_stem(Path(images_dir), IMAGE_SUFFIXES, "image")
    masks = _by_stem(Path(masks_dir), MASK_SUFFIXES, "mask")
    if missing := sorted(set(images) - set(masks)):
        raise MsafError(
            f"image {images[missing[0]]} has no mask in {masks_dir}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if orphans := sorted(set(masks) - set(images)):
        raise MsafError(
            f"mask {masks[orphans[0]]} has no image in {images_dir}"
            + (f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else "")
        )
    return [Pair(stem, images[stem], masks[stem]) for stem in sorted(images)]


def _decode(path: Path, what: str, convert: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """Open an image file and convert it; decoding failures become one clear MsafError."""
    try:
        with Image.open(path) as img:
            return convert(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise MsafError(
            f"{path}: cannot read {what} ({exc.__class__.__name__}); is it truncated or not an image?"
        ) from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I", "F"):
        raise MsafError(f"{getattr(img, 'filename', 'image')}: {img.mode} image; training photos must be 8-bit RGB")
    return np.asarray(img.convert("RGB"))


def _to_mask(img: Image.Image) -> np.ndarray:
    if img.mode not in ("L", "P", "1"):
        raise MsafError(f"{getattr(img, 'filename', 'mask')}: mask must be single-band 8-bit (got mode {img.mode})")
    return np.asarray(img.convert("L") if img.mode == "1" else img)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3)."""
    return _decode(path, "image", _to_rgb)


def class_lut(classes: Sequence[ClassSpec], ignore_values: Sequence[int] = ()) -> np.ndarray:
    """Lookup table mask value -> class id (UNMAPPED for values no class claims)."""
    lut = np.full(256, UNMAPPED, dtype=np.uint8)
    for index, spec in enumerate(classes):
        lut[list(spec.values)] = index
    lut[list(ignore_values)] = NO_CLASS
    return lut


def labels_from_mask(mask: np.ndarray, lut: np.ndarray, source: Path) -> np.ndarray:
    """Map raw mask values to class ids, refusing values that params.yaml does not map."""
    labels = lut[mask]
    if (labels == UNMAPPED).any():
        unknown = sorted(int(v) for v in np.unique(mask[labels == UNMAPPED]))[:8]
        raise MsafError(
            f"{source}: mask value(s) {unknown} are not mapped to any class; "
            "add them to data.classes or data.ignore_values in params.yaml"
        )
    return labels


def load_labelled(
    pairs: Sequence[Pair], lut: np.ndarray, *, source: str = "", unlabelled: Sequence[int] = ()
) -> list[LabelledImage]:
    """Decode and validate pairs (sizes must match, mask values must be mapped)."""
    loaded = []
    for pair in pairs:
        image = read_image(pair.image)
        mask = _decode(pair.mask, "mask", _to_mask)
        if image.shape[:2] != mask.shape:
            raise MsafError(
                f"{pair.mask}: size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                f"{pair.image.name} ({image.shape[1]}x{image.shape[0]})"
            )
        loaded.append(
            LabelledImage(pair.stem, image, labels_from_mask(mask, lut, pair.mask), source, tuple(unlabelled))
        )
    return loaded


def photo_of(stem: str, pattern: str) -> str:
    """The photo a file was cut from: group 1 of ``pattern`` (``DSC00552b`` -> ``DSC00552``)."""
    match = re.match(pattern, stem)
    return match.group(1) if match and match.group(1) else stem


def split_pairs(
    pairs: Sequence[Pair], val_fraction: float, seed: int, photo_pattern: str | None = None
) -> tuple[list[Pair], list[Pair]]:
    """Deterministic train/val split: the same stems and seed always give the same split.

    With ``photo_pattern`` whole photos are drawn (all crops of one photo land on the same side,
    so validation never sees a crop of a training photo); ``val_fraction`` is then of photos.
    """
    if len(pairs) < 2:
        raise MsafError(f"need at least 2 labelled images to split into train and val, found {len(pairs)}")
    photos = [photo_of(p.stem, photo_pattern) if photo_pattern else p.stem for p in pairs]
    groups = list(dict.fromkeys(photos))
    if len(groups) < 2:
        raise MsafError(
            f"all {len(pairs)} labelled images are crops of one photo ({groups[0]}); "
            "a photo-wise split needs at least 2 photos"
        )
    order = np.random.default_rng(seed).permutation(len(groups))
    n_val = min(len(groups) - 1, max(1, round(len(groups) * val_fraction)))
    val_groups = {groups[i] for i in order[:n_val].tolist()}
    train = [p for p, photo in zip(pairs, photos, strict=True) if photo not in val_groups]
    val = [p for p, photo in zip(pairs, photos, strict=True) if photo in val_groups]
    return train, val


def fingerprint(pairs: Sequence[Pair]) -> str:
    """SHA-256 over names and bytes of every file: identifies exactly what a model saw."""
    digest = hashlib.sha256()
    for pair in pairs:
        for path in (pair.image, pair.mask):
            digest.update(path.name.encode())
            digest.update(bytes.fromhex(file_digest(path, "sha256")))
    return digest.hexdigest()
