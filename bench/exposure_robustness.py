"""Where does the image stop showing cracks? The same ground under less and more light.

Each set's validation photos are composed into an orthomosaic with exact truth (as in
`survey_accuracy.py`); its pixel values are then scaled by an exposure gain (a shadow under a
girder: 0.05-0.5; glare or an overexposed flight: 1.5-4, clipped at 255), given sensor noise
(sigma 2 grey levels) and stored JPEG-compressed (quality 85) as a drone orthomosaic is, then
surveyed with the model (with its exposure floor, or ``--exposure-floor``). Per set and gain: crack
tolerant F1 and recall, and the statistics the report's exposure check reads per cell (mean
luminance, share of clipped pixels), so that its limits are set where the crack map fails.

    python bench/exposure_robustness.py --model pipeline/assets/msaf-dsnet.safetensors \
        --size 1024 --out metrics/exposure_robustness.json
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rich.console import Console
from rich.table import Table
from scipy.ndimage import gaussian_filter

from pipeline.class_ids import NO_CLASS
from pipeline.config import SurveyConfig
from pipeline.data.manifest import Manifest, load_manifest
from pipeline.fsutil import write_json
from pipeline.metrics.summary import ClassMetrics
from pipeline.report.exposure import exposure_statistics
from pipeline.survey import run_survey
from pipeline.survey_accuracy import compose_val_mosaic, score_mask

GAINS = (0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


def exposed(ortho: Path, gain: float, out: Path, seed: int, blur_px: float = 0.0) -> Path:
    """The mosaic under ``gain`` times the light (optionally blurred first by a Gaussian of
    ``blur_px``: defocus), with sensor noise, JPEG-compressed (q85)."""
    rng = np.random.default_rng(seed)
    with rasterio.open(ortho) as src:
        data = src.read().astype(np.float32)
        profile = src.profile
    if blur_px > 0:
        data = gaussian_filter(data, (0, blur_px, blur_px))
    data = np.clip(np.rint(data * gain + rng.normal(0, 2, data.shape)), 0, 255).astype(np.uint8)
    profile |= {"compress": "jpeg", "jpeg_quality": 85, "tiled": True, "blockxsize": 256, "blockysize": 256}
    profile.pop("predictor", None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


@dataclass(frozen=True)
class SurveyedLevel:
    """One set's validation mosaic under one level of a degradation, surveyed and scored."""

    set_name: str
    level: float
    source: Path  # the degraded mosaic that was surveyed
    truth: np.ndarray  # the mosaic's truth raster
    crack: ClassMetrics  # the mask's crack scores against it
    exposure_floor: float | None  # as the survey recorded it


def surveyed_levels(
    manifest: Manifest,
    size: int,
    seed: int,
    levels: list[float],
    degrade: Callable[[Path, float, Path], Path],
    model: Path,
    cfg: SurveyConfig,
    work: Path,
) -> Iterator[SurveyedLevel]:
    """Each set's validation mosaic (``compose_val_mosaic``) degraded to each level, surveyed with
    the model and scored: the loop the robustness benches share."""
    for entry in manifest.sets:
        ortho, truth, names = compose_val_mosaic(entry, manifest.classes, size, work, seed)
        with rasterio.open(truth) as reference:
            expected = reference.read(1)
        for level in levels:
            source = degrade(ortho, level, work / f"{entry.name}_{level}.tif")
            out = work / f"{entry.name}_{level}"
            record = run_survey(source, out, cfg, model_path=model)
            with rasterio.open(out / "mask.tif") as mask:
                crack = score_mask(mask.read(1), expected, names).classes["crack"]
            yield SurveyedLevel(entry.name, level, source, expected, crack, record.exposure_floor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--size", type=int, default=1024, help="mosaic side in px")
    parser.add_argument("--gains", type=float, nargs="*", default=list(GAINS))
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--exposure-floor", type=float, default=None, help="lift tiles darker than this (default: the model's)"
    )
    args = parser.parse_args()

    manifest = load_manifest(args.manifest)
    results: dict[str, dict[str, dict[str, float]]] = {}
    floor = None
    cfg = SurveyConfig(device="cpu", gsd_policy="ignore", exposure_floor=args.exposure_floor)
    with tempfile.TemporaryDirectory(prefix="msaf-exposure-") as tmp:
        levels = surveyed_levels(
            manifest,
            args.size,
            args.seed,
            args.gains,
            lambda ortho, gain, out: exposed(ortho, gain, out, args.seed),
            args.model,
            cfg,
            Path(tmp),
        )
        for surveyed in levels:
            with rasterio.open(surveyed.source) as image:
                stats = exposure_statistics(image.read(), surveyed.truth != NO_CLASS)
            results.setdefault(surveyed.set_name, {})[str(surveyed.level)] = {
                "tol_f1": surveyed.crack.tol_f1,
                "tol_recall": surveyed.crack.tol_recall,
                "mean_luminance": stats.mean_luminance,
                "clipped_share": stats.clipped_share,
            }
            floor = surveyed.exposure_floor
            print(surveyed.set_name, surveyed.level, f"tol-F1 {surveyed.crack.tol_f1:.3f}", stats, flush=True)
    table = Table(title=f"crack tolerant F1 / recall on {args.size}² validation mosaics under another exposure")
    for column in ("set", "gain", "tol-F1", "tol recall", "mean luminance", "clipped share"):
        table.add_column(column)
    for name, rows in results.items():
        for gain, row in rows.items():
            table.add_row(
                name,
                gain,
                f"{row['tol_f1']:.3f}",
                f"{row['tol_recall']:.3f}",
                f"{row['mean_luminance']:.0f}",
                f"{row['clipped_share']:.2f}",
            )
    Console(width=160).print(table)
    if args.out:
        write_json(
            args.out,
            {"model": str(args.model), "size": args.size, "exposure_floor": floor, "sets": results},
        )


if __name__ == "__main__":
    main()
