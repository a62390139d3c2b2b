"""A georeferenced label set: ``labels.tif`` (class ids on an orthomosaic's exact grid, 255 = ignored)
beside ``labelset.json``, which names the orthomosaic by path and fingerprint and says where the labels came from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.class_ids import NO_CLASS
from pipeline.errors import MsafError, first_problem
from pipeline.fsutil import write_json
from pipeline.labels.burn import window_transform, windows
from pipeline.raster.cog import GeoTiffSink
from pipeline.raster.grid import Box
from pipeline.styles import mask_colormap
from pipeline.survey_folder import exclusive, prepare_output_folder
from pipeline.timestamps import creation_time

LABELS_NAME = "labels.tif"
RECORD_NAME = "labelset.json"
LABELSET_VERSION = 1
BLOCK = 2048  # px of one window: labels are burnt and written a window at a time


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VectorSource(_Record):
    """A vector file the labels were drawn from (its bytes identify it)."""

    path: str
    fingerprint: str
    layer: str | None = None
    features: int


class LabelSetRecord(_Record):
    """labelset.json: what labels.tif labels, on which orthomosaic, from what."""

    format: Literal["msaf-labelset"] = "msaf-labelset"
    version: int = LABELSET_VERSION
    origin: Literal["vectors", "review"]
    image: str
    image_fingerprint: str
    classes: list[str]
    width: int
    height: int
    crs: str
    transform: list[float]
    gsd_m: float
    sources: list[VectorSource]
    area_of_interest: VectorSource | None = None
    survey: str | None = None  # the reviewed survey folder (origin review)
    pixels: dict[str, int]  # per class name, and "ignored"
    created_utc: str


def read_labelset(folder: Path) -> LabelSetRecord:
    """The record of a label set folder; anything else is one line."""
    path = Path(folder) / RECORD_NAME
    if not path.is_file() or not (Path(folder) / LABELS_NAME).is_file():
        raise MsafError(f"{folder}: not a label set (expected {LABELS_NAME} and {RECORD_NAME}; see `msaf labels`)")
    try:
        return LabelSetRecord.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        reason = first_problem(exc) if isinstance(exc, ValidationError) else str(exc)[:80]
        raise MsafError(f"{path} is not a label set record ({reason}); rebuild it with `msaf labels`") from None


LabelWindow = Callable[[Box, Any], np.ndarray]  # (window, its transform) -> uint8 class ids


@contextmanager
def _sink(out_dir: Path, grid: Any, classes: list[str]) -> Iterator[GeoTiffSink]:
    sink = GeoTiffSink(
        out_dir / LABELS_NAME,
        grid.width,
        grid.height,
        grid.crs,
        grid.transform,
        nodata=NO_CLASS,
        colormap=mask_colormap(classes),
        categories=classes,
        description="training labels (class ids; 255 = ignored)",
    )
    try:
        yield sink
    except BaseException:
        sink.abort()
        raise


def write_labelset(
    out_dir: Path, grid: Any, classes: list[str], label_window: LabelWindow, **record: Any
) -> LabelSetRecord:
    """Write labels.tif window by window from ``label_window`` and then labelset.json (``record``'s
    fields besides the grid's and the counts). Both appear only when complete."""
    prepare_output_folder(out_dir, (LABELS_NAME, RECORD_NAME))
    with exclusive(out_dir):
        counts = np.zeros(256, dtype=np.int64)
        with _sink(out_dir, grid, classes) as sink:
            for box in windows(grid.width, grid.height, BLOCK):
                labels = label_window(box, window_transform(box, grid.transform))
                counts += np.bincount(labels.ravel(), minlength=256)
                sink.write(box, labels)
            sink.build_cog({"MSAF_LABELSET": "1"})
            sink.publish()
        result = LabelSetRecord(
            classes=classes,
            width=grid.width,
            height=grid.height,
            crs=grid.crs.to_wkt(),
            transform=list(grid.transform)[:6],
            pixels={name: int(counts[i]) for i, name in enumerate(classes)} | {"ignored": int(counts[NO_CLASS])},
            created_utc=creation_time(),
            **record,
        )
        write_json(out_dir / RECORD_NAME, result.model_dump(mode="json"))
    return result
