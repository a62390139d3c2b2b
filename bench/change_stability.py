"""How much change `msaf compare` reports between two flights of a structure that did not change.

Per data set, its validation photos (never trained on) are composed into a 1-mm orthomosaic; the
second flight is the same ground flown again: georeferenced 83 mm east and 41 mm south of the first
(GNSS without ground control), sampled at another pixel phase (0.4 px, cubic), in other light (gamma
1.2, gain 0.85, +15), blurred (sigma 0.7 px), noisy (sigma 2) and JPEG-compressed (quality 85, as a
drone package stores it). Both are surveyed with the model and compared, registered (the default)
and as they lie. Every crack is the same crack: whatever is new, not found, extended or widened is
a false alarm, as a share of the crack length.

    python bench/change_stability.py --model pipeline/assets/msaf-dsnet.safetensors \
        --manifest data/prepared/manifest.json --size 2048 --out metrics/change_stability.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
from affine import Affine
from PIL import Image, ImageFilter
from rich.console import Console
from rich.table import Table
from scipy.ndimage import shift as shift_image

from pipeline.config import RegistrationConfig, ReportConfig, SurveyConfig
from pipeline.data.manifest import load_manifest
from pipeline.fsutil import write_json
from pipeline.report.compare import compare_surveys
from pipeline.survey import run_survey
from pipeline.survey_accuracy import compose_val_mosaic

GEOREFERENCE_OFFSET_M = (0.083, -0.041)
PIXEL_PHASE = (0.4, -0.3)  # east, north px
FALSE_ALARMS = ("new", "extended", "widened", "not found (repaired?)")
MISSED = ("not detected (still visible)", "missed before (visible then)")  # told apart by the images
NOT_SEEN = "not seen (too dark or blurred)"  # where either flight's image could not show a crack


def fly_again(
    ortho: Path,
    out: Path,
    seed: int = 0,
    offset_m: tuple[float, float] = GEOREFERENCE_OFFSET_M,
    phase: tuple[float, float] = PIXEL_PHASE,
) -> None:
    """The same ground from a second flight (see the module docstring); another ``offset_m`` (east,
    north) and pixel ``phase`` for a third."""
    with rasterio.open(ortho) as src:
        rgb, profile = src.read(), src.profile
    moved = np.stack([shift_image(band.astype(float), (-phase[1], phase[0]), order=3, mode="nearest") for band in rgb])
    lit = np.clip(255 * (np.clip(moved, 0, 255) / 255) ** 1.2 * 0.85 + 15, 0, 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(lit.transpose(1, 2, 0)).filter(ImageFilter.GaussianBlur(0.7)), float)
    noisy = np.clip(blurred + np.random.default_rng(seed).normal(0, 2, blurred.shape), 0, 255).astype(np.uint8)
    transform = Affine.translation(*offset_m) @ profile["transform"]
    profile |= {"transform": transform, "compress": "jpeg", "jpeg_quality": 85, "photometric": "ycbcr"}
    profile |= {"tiled": True, "blockxsize": 256, "blockysize": 256}
    profile.pop("nodata", None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(noisy.transpose(2, 0, 1))


def false_alarms(changes_dir: Path, old_total_m: float, new_total_m: float) -> dict[str, float | dict[str, int]]:
    """Counts per status (piece by piece, and per crack of the second survey: ``per_crack``) and the
    crack length each false alarm claims, as a share of the crack length."""
    changes = gpd.read_file(changes_dir / "changes.gpkg", layer="changes")
    cracks = changes[changes["class"] == "crack"]
    counts = cracks["status"].value_counts().to_dict()
    new_m = float(cracks.loc[cracks["status"] == "new", "new_length_m"].sum())
    lost_m = float(cracks.loc[cracks["status"] == "not found (repaired?)", "old_length_m"].sum())
    grown_m = float(cracks.loc[cracks["status"] == "extended", "delta_length_m"].sum())
    per_crack = (
        gpd.read_file(changes_dir / "changes.gpkg", layer="crack_changes")["status"].value_counts().to_dict()
        if "crack_changes" in pyogrio.list_layers(changes_dir / "changes.gpkg")[:, 0]
        else {}
    )
    return {
        **{f"count_{status}": int(counts.get(status, 0)) for status in (*FALSE_ALARMS, *MISSED, NOT_SEEN, "unchanged")},
        "per_crack": {str(status): int(n) for status, n in per_crack.items()},
        "new_share": new_m / new_total_m if new_total_m else float("nan"),
        "not_found_share": lost_m / old_total_m if old_total_m else float("nan"),
        "extended_share": grown_m / old_total_m if old_total_m else float("nan"),
        "widened_share": float(cracks.loc[cracks["status"] == "widened", "new_length_m"].sum()) / new_total_m
        if new_total_m
        else float("nan"),
        # what a crack rated unchanged could have widened unseen, the median over the cracks measured
        "detectable_widening_mm": float(cracks["detectable_widening_mm"].median()),
    }


def crack_length_m(survey: Path) -> float:
    defects = gpd.read_file(survey / "defects.gpkg", layer="defects")
    return float(defects.loc[defects["class"] == "crack", "length_m"].sum())


def flights_arguments(doc: str | None, keeps_work: bool = False) -> argparse.Namespace:
    """The command line of the benches that fly unchanged ground again (this one, history_stability);
    ``keeps_work``: ``--work DIR`` keeps the surveys and ``--reuse`` follows them again without flying."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("pipeline/assets/msaf-dsnet.safetensors"))
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--size", type=int, default=2048, help="mosaic side in px")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--width-band", choices=["own", "same"], default=ReportConfig().width_band, help="compare's report.width_band"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    if keeps_work:
        parser.add_argument("--work", type=Path, default=None, help="keep the flights and surveys here")
        parser.add_argument("--reuse", action="store_true", help="reuse the surveys in --work")
    return parser.parse_args()


def main() -> None:
    args = flights_arguments(__doc__)
    manifest = load_manifest(args.manifest)
    report = ReportConfig(width_band=args.width_band)
    as_they_lie = report.model_copy(update={"registration": RegistrationConfig(mode="off")})
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="msaf-stability-") as tmp:
        work = Path(tmp)
        for entry in manifest.sets:
            if entry.images is None or not entry.val:
                continue
            first, _, _ = compose_val_mosaic(entry, manifest.classes, args.size, work, args.seed)
            second = work / f"{entry.name}-again.tif"
            fly_again(first, second)
            surveys = [work / f"{entry.name}-{n}" for n in ("first", "second")]
            for ortho, folder in zip((first, second), surveys, strict=True):
                run_survey(ortho, folder, SurveyConfig(device="cpu", gsd_policy="ignore"), model_path=args.model)
            registered = compare_surveys(*surveys, work / f"{entry.name}-registered", report)
            compare_surveys(*surveys, work / f"{entry.name}-as-they-lie", as_they_lie)
            totals = crack_length_m(surveys[0]), crack_length_m(surveys[1])
            results[entry.name] = {
                "crack_length_m": {"first": totals[0], "second": totals[1]},
                "registration": registered.registration.as_row(),
                "registered": false_alarms(work / f"{entry.name}-registered", *totals),
                "as_they_lie": false_alarms(work / f"{entry.name}-as-they-lie", *totals),
            }
    table = Table(
        title=f"false change between two flights of unchanged ground ({args.size}² mosaics, {args.model.name})"
    )
    for column in (
        "set",
        "compared",
        "crack m (1st / 2nd)",
        "unchanged",
        "new",
        "extended",
        "widened",
        "not found",
        "not detected / missed before",
        "not seen",
        "new length",
        "not-found length",
    ):
        table.add_column(column)
    for name, result in results.items():
        for mode in ("registered", "as_they_lie"):
            row = result[mode]
            table.add_row(
                name,
                mode.replace("_", " "),
                "{first:.2f} / {second:.2f}".format(**result["crack_length_m"]),
                str(row["count_unchanged"]),
                str(row["count_new"]),
                str(row["count_extended"]),
                str(row["count_widened"]),
                str(row["count_not found (repaired?)"]),
                f"{row['count_not detected (still visible)']} / {row['count_missed before (visible then)']}",
                str(row[f"count_{NOT_SEEN}"]),
                f"{row['new_share']:.1%}",
                f"{row['not_found_share']:.1%}",
            )
    Console().print(table)
    true_east = -(GEOREFERENCE_OFFSET_M[0] * 1000 + PIXEL_PHASE[0])  # mm, at 1-mm pixels
    true_north = -(GEOREFERENCE_OFFSET_M[1] * 1000 + PIXEL_PHASE[1])
    for name, result in results.items():
        shift = result["registration"]
        print(
            f"{name}: {shift['note'] or 'registered'}: {shift['shift_east_m'] * 1000:+.1f} mm east, "
            f"{shift['shift_north_m'] * 1000:+.1f} mm north (true: {true_east:+.1f}, {true_north:+.1f})"
        )
    if args.out:
        write_json(args.out, {"size": args.size, "model": str(args.model), "sets": results})


if __name__ == "__main__":
    main()
