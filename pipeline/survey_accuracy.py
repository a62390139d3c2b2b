"""Accuracy through the real survey: each data set's validation photos composed into a stitched,
georeferenced orthomosaic, surveyed tile by tile with ``run_survey``, the mask scored against the
mosaic's exact truth raster.

Scores on whole validation photos can disagree with what a survey delivers: a tile sees less
context than a photo (the shipped model's crackforest tolerant F1 is 0.870 on the photos and 0.839
through 256-px tiles), so the champion gate scores both (``registry.survey_size``).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import rasterio

from pipeline.checkpoint import read_metadata
from pipeline.config import ClassSpec, SurveyConfig
from pipeline.data.manifest import Manifest, ManifestSet
from pipeline.metrics import SegmentationMetrics
from pipeline.metrics.summary import MetricsSummary

MOSAIC_GSD_M = 0.001  # a set without a published GSD is composed at the model's nominal 1 mm


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
    entry: ManifestSet, classes: list[ClassSpec], size: int, work: Path, seed: int
) -> tuple[Path, Path, list[str]]:
    """One set's validation photos as a stitched 1-mm orthomosaic with its exact truth raster.

    The truth raster holds the model's class ids, mapped by this set's values; a class the set
    never labels gets a value no mask holds (a ClassSpec needs one).
    """
    from pipeline.data.mosaic import compose_mosaic

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
        entry.gsd_m or MOSAIC_GSD_M,
        "EPSG:32633",
        specs,
        compress="deflate",
        seed=seed,
    )
    return ortho, truth, names


def score_mask(predicted: np.ndarray, expected: np.ndarray, names: list[str]) -> MetricsSummary:
    """IoU, F1, 2-px tolerant F1 and widths of a mask against the truth on the same grid."""
    widths = [names.index("crack")] if "crack" in names else []
    metrics = SegmentationMetrics(names, 2, width_classes=widths)
    valid = expected != 255
    metrics.update(np.where(valid, predicted, 255).astype(np.uint8), expected)
    return metrics.compute()


def survey_set(
    entry: ManifestSet, model: Path, classes: list[ClassSpec], size: int, work: Path, seed: int, cfg: SurveyConfig
) -> tuple[MetricsSummary, float]:
    """Mosaic one set's validation photos, survey it, score the mask against the truth raster.

    Returns:
        (the mask's metrics, the survey's end-to-end Mpix/s).
    """
    from pipeline.survey import run_survey

    ortho, truth, names = compose_val_mosaic(entry, classes, size, work, seed)
    record = run_survey(ortho, work / f"{entry.name}_survey", cfg, model_path=model)
    with rasterio.open(work / f"{entry.name}_survey" / "mask.tif") as mask, rasterio.open(truth) as reference:
        summary = score_mask(mask.read(1), reference.read(1), names)
    return summary, record.throughput_mpix_s.end_to_end


def survey_scores(model: Path, manifest: Manifest, size: int, seed: int = 3) -> dict[str, float]:
    """Each photo set's score through the survey: the tolerant F1 of the model's scored classes (its
    thresholded classes, else every foreground class), averaged over those the set labels, the
    same rule as ``evaluate_sets``. Label sets on orthomosaics are skipped (no photos to compose)."""
    meta = read_metadata(model)
    scored = list(meta.thresholds) or meta.class_names[1:]
    cfg = SurveyConfig(device="cpu", gsd_policy="ignore")
    scores = {}
    with tempfile.TemporaryDirectory(prefix="msaf-survey-gate-") as tmp:
        for entry in manifest.sets:
            if entry.images is None or not entry.val:
                continue
            summary, _ = survey_set(entry, model, manifest.classes, size, Path(tmp), seed, cfg)
            values = [v for n in scored if not math.isnan(v := summary.class_tol_f1(n))]
            scores[entry.name] = float(np.mean(values)) if values else math.nan
    return scores
