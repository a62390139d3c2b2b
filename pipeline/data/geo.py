"""Training data from a georeferenced label set (``msaf labels``): blocks of the orthomosaic, read
windowed at the model's working GSD and split spatially.

The orthomosaic is never read whole: the label raster is scanned window by window for blocks that
hold any label, and only those blocks are decoded. Blocks tile the raster without overlap and are
split by groups of ``SPLIT_CELL`` x ``SPLIT_CELL`` blocks (fewer when the labels cover less), so no
pixel, and no crack running on into the next block of its group, is on both sides of the split.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import rasterio

from pipeline.class_ids import NO_CLASS
from pipeline.data.augment import resize_pair
from pipeline.data.labelled import LabelledImage
from pipeline.errors import MsafError
from pipeline.fsutil import file_digest
from pipeline.labels.burn import windows
from pipeline.labels.labelset import LABELS_NAME, RECORD_NAME, LabelSetRecord, read_labelset
from pipeline.raster.grid import Box
from pipeline.raster.source import rgb_bands, source_for
from pipeline.raster.trust import locate

SPLIT_CELL = 4  # blocks per side of one split cell


def block_name(box: Box) -> str:
    """A block's stable name in the manifest: its first row and column on the label set's grid."""
    return f"r{box.row0}_c{box.col0}"


def _box_of(name: str, block: int, record: LabelSetRecord) -> Box:
    row0, col0 = (int(part[1:]) for part in name.split("_"))
    return Box(row0, col0, min(row0 + block, record.height), min(col0 + block, record.width))


def input_block(record: LabelSetRecord, block_px: int, working_gsd_m: float | None) -> int:
    """Pixels of the label set's grid that make one ``block_px`` block at the working GSD."""
    factor = record.gsd_m / working_gsd_m if working_gsd_m else 1.0
    return max(16, round(block_px / factor))


def labelled_blocks(folder: Path, block: int) -> list[Box]:
    """The blocks of a label set that hold at least one label (not all 255), row by row."""
    with rasterio.open(Path(folder) / LABELS_NAME, driver="GTiff") as labels:
        return [
            box
            for box in windows(labels.width, labels.height, block)
            if (labels.read(1, window=box.window) != NO_CLASS).any()
        ]


def split_cell(boxes: list[Box], block: int) -> int:
    """Side in px of the split cells: ``SPLIT_CELL`` blocks, fewer when the labels span under two cells."""
    cells = SPLIT_CELL
    while cells > 1 and len({(b.row0 // (block * cells), b.col0 // (block * cells)) for b in boxes}) < 2:
        cells //= 2
    return block * cells


def split_blocks(boxes: list[Box], block: int, val_fraction: float, seed: int) -> tuple[list[Box], list[Box]]:
    """Whole split cells of blocks to validation (``val_fraction`` of the cells, at least one when
    there are two or more), the rest to training; the same blocks and seed give the same split."""
    side = split_cell(boxes, block)
    cells = sorted({(b.row0 // side, b.col0 // side) for b in boxes})
    count = min(len(cells) - 1, max(1, math.ceil(val_fraction * len(cells)))) if len(cells) > 1 else 0
    order = np.random.default_rng(seed).permutation(len(cells))
    held = {cells[i] for i in order[:count]}
    val = [b for b in boxes if (b.row0 // side, b.col0 // side) in held]
    return [b for b in boxes if b not in val], val


def labelset_fingerprint(folder: Path, record: LabelSetRecord) -> str:
    """What identifies a label set's data: its labels' bytes and the orthomosaic's fingerprint."""
    parts = [file_digest(Path(folder) / LABELS_NAME), record.image_fingerprint, file_digest(Path(folder) / RECORD_NAME)]
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


def class_map(record: LabelSetRecord, class_names: list[str]) -> np.ndarray:
    """Lookup table label set class id -> the model's class id, matched by name (255 stays ignored)."""
    if unknown := sorted(set(record.classes) - set(class_names)):
        raise MsafError(f"label set classes {unknown} are not in data.classes {class_names}; add them or relabel")
    lut = np.full(256, NO_CLASS, dtype=np.uint8)
    for index, name in enumerate(record.classes):
        lut[index] = class_names.index(name)
    return lut


def load_blocks(
    folder: Path,
    names: list[str],
    block: int,
    working_gsd_m: float | None,
    class_names: list[str],
    *,
    source: str = "",
) -> list[LabelledImage]:
    """Decode the named blocks: RGB and labels from their windows, resampled to the working GSD,
    labels mapped to the model's classes; the orthomosaic's nodata is ignored."""
    record = read_labelset(folder)
    lut = class_map(record, class_names)
    location = locate(record.image)
    factor = record.gsd_m / working_gsd_m if working_gsd_m else 1.0
    unlabelled = tuple(i for i, name in enumerate(class_names) if name not in record.classes)
    items = []
    with (
        source_for(location).open() as image,
        rasterio.open(Path(folder) / LABELS_NAME, driver="GTiff") as labels_file,
    ):
        if (image.width, image.height) != (record.width, record.height):
            raise MsafError(f"{record.image}: not the orthomosaic of label set {folder} (another size); relabel it")
        if image.dtypes[0] != "uint8":
            raise MsafError(
                f"{record.image}: training reads 8-bit orthomosaics; convert it (gdal_translate -ot Byte -scale)"
            )
        bands = rgb_bands(image)
        for name in names:
            box = _box_of(name, block, record)
            rgb = np.moveaxis(image.read(bands, window=box.window), 0, -1)
            labels = lut[labels_file.read(1, window=box.window)]
            labels[image.dataset_mask(window=box.window) == 0] = NO_CLASS
            shape = (max(1, round(box.height * factor)), max(1, round(box.width * factor)))
            rgb, labels = resize_pair(rgb, labels, shape)
            items.append(LabelledImage(name, np.ascontiguousarray(rgb), labels, source, unlabelled))
    return items
