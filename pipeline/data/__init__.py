"""Labelled training data: discovery, validation, class mapping, split and augmentation."""

from pipeline.data.augment import CropSampler, sample_batch
from pipeline.data.labelled import (
    LabelledImage,
    Pair,
    class_lut,
    find_pairs,
    fingerprint,
    load_labelled,
    read_image,
    split_pairs,
)

__all__ = [
    "CropSampler",
    "LabelledImage",
    "Pair",
    "class_lut",
    "find_pairs",
    "fingerprint",
    "load_labelled",
    "read_image",
    "sample_batch",
    "split_pairs",
]
