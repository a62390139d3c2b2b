"""Does `msaf compare` find cracks that really widened, and only those?

Per data set, its validation photos (never trained on) are composed into a 1-mm orthomosaic with
their truth. Before the second flight (``change_stability.fly_again``: another georeference, pixel
phase, light, blur, noise and JPEG), a fifth of the true cracks (connected pieces of the truth at
least ``--min-length`` pixels) are widened by 0.5 px and a fifth by 1 px, as optics would show it:
near the crack, each pixel takes on its darkest four-neighbour's grey by the share of it a wider
crack would cover (a quarter for 0.5 px, a half for 1 px), so the crack's dark core spreads by a
quarter or a half pixel on each side (across the rows and columns; ~0.7 of that across a diagonal
crack), whatever the width its label was drawn at. The rest are left as they were: most cracks of
a structure do not widen between two flights, and the comparison measures the flights' own
difference in width over all of them. Both flights are surveyed with the model and compared; each
piece the comparison rates is put on the true crack most of it lies on, and the bench counts, by
crack length, how much of each group was called widened: the widened groups' share is the
detection rate, the untouched group's the false alarm rate.

    python bench/widening_detection.py --model pipeline/assets/msaf-dsnet.safetensors \
        --manifest data/prepared/manifest.json --size 2048 --out metrics/widening_detection.json

``--work DIR`` keeps the flights and surveys there and reuses them, so that a change to the rule
can be measured again in seconds (``--recompare``). ``--same-band`` also reads the first survey's
cracks in both images with each image's own band and ring choice (``same_band_widths``, the
experiment that led to ``pipeline.report.paired_widths``, which chooses them once for both).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from change_stability import fly_again  # beside this script
from rasterio.features import rasterize
from rich.console import Console
from rich.table import Table
from scipy import ndimage

from pipeline.config import ReportConfig, SurveyConfig
from pipeline.data.manifest import load_manifest
from pipeline.fsutil import write_json
from pipeline.report.compare import compare_surveys
from pipeline.report.defects import build_defects
from pipeline.survey import run_survey
from pipeline.survey_accuracy import compose_val_mosaic

WIDENINGS_PX = (0.0, 0.5, 1.0)  # the three groups of true cracks: untouched, +0.5 px, +1 px
GROUP_SHARES = (0.6, 0.2, 0.2)  # most cracks of a structure do not widen between two flights


def widen_cracks(ortho: Path, truth: Path, crack_id: int, min_length: int, seed: int) -> np.ndarray:
    """Widen two fifths of the true cracks in ``ortho`` (in place); the group of each crack pixel
    (index into WIDENINGS_PX, -1 where no crack or one too short to rate)."""
    with rasterio.open(truth) as src:
        crack = src.read(1) == crack_id
    pieces, count = ndimage.label(crack, structure=np.ones((3, 3)))
    sizes = ndimage.sum(crack, pieces, index=np.arange(1, count + 1))
    rng = np.random.default_rng(seed)
    groups = np.full(count + 1, -1)
    kept = np.nonzero(sizes >= min_length)[0] + 1
    order = rng.permutation(len(kept))
    groups[kept[order]] = np.searchsorted(np.cumsum(GROUP_SHARES), (np.arange(len(kept)) + 0.5) / len(kept))
    group_map = groups[pieces]
    group_map[~crack] = -1
    disk = ndimage.generate_binary_structure(2, 1)  # radius 1 px: the four neighbours
    with rasterio.open(ortho, "r+") as dst:
        rgb = dst.read().astype(float)
        darkest = np.stack([ndimage.grey_erosion(band, footprint=disk) for band in rgb])
        for label in kept:
            widening = WIDENINGS_PX[groups[label]]
            if not widening:
                continue
            # the crack's dark core spreads by widening / 2 px a side: the labels' own width does not
            # matter (some sets' labels are drawn wider than the crack)
            near = ndimage.binary_dilation(pieces == label, structure=np.ones((3, 3)), iterations=2)
            share = widening / 2
            rgb[:, near] = (1 - share) * rgb[:, near] + share * darkest[:, near]
        dst.write(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
    return group_map


def rated_groups(changes_dir: Path, truth: Path, group_map: np.ndarray) -> list[dict]:
    """Each crack piece of the second survey the comparison rated: its status, length, the widening
    it would have been called widened at, and the group of the true crack most of it lies on (-1: none)."""
    changes = gpd.read_file(changes_dir / "changes.gpkg", layer="changes")
    changes = changes[(changes["class"] == "crack") & changes["new_length_m"].notna()]
    with rasterio.open(truth) as src:
        transform, crs = src.transform, src.crs
    rows = []
    for status, length, detectable, geometry in zip(
        changes["status"],
        changes["new_length_m"],
        changes["detectable_widening_mm"],
        changes.to_crs(crs).geometry,
        strict=True,
    ):
        group = group_of(geometry, group_map, transform)
        rows.append({"status": status, "length_m": float(length), "group": group, "detectable_mm": detectable})
    return rows


def group_of(geometry: object, group_map: np.ndarray, transform: object) -> int:
    """The group of the true crack most of ``geometry`` lies on (-1: none)."""
    inside = rasterize([(geometry, 1)], out_shape=group_map.shape, transform=transform, all_touched=True)
    groups = group_map[inside.astype(bool)]
    groups = groups[groups >= 0]
    return int(np.bincount(groups).argmax()) if len(groups) else -1


def robust_sd(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if len(values) else float("nan")


def same_band_widths(work: Path, name: str, group_map: np.ndarray) -> dict[str, object]:
    """The next lever, measured: both flights' widths read over the same band of ground. The first
    survey's cracks (its mask, skeleton and centreline pieces) are measured in the first image and
    in the second; the second flight lies on the first's pixel grid (``fly_again`` moves only its
    georeference, and its pixel phase is part of the flight), so the pieces pair exactly. Per-piece
    noise of the difference, and per group the median over cracks of each crack's median widening
    (less the difference over all pieces) and its spread across cracks."""
    with rasterio.open(work / f"{name}.tif") as first:
        transform = first.transform
    second = work / "second_on_first_grid.tif"
    shutil.copy(work / "second.tif", second)
    with rasterio.open(second, "r+") as dst:
        dst.transform = transform
    names = ["background", "crack", "joint"]
    cfg = ReportConfig()
    tables = [
        build_defects(work / "first" / "mask.tif", None, names, cfg, image_path=image)
        for image in (work / f"{name}.tif", second)
    ]
    widths = [table.centerlines.set_index(["defect_id", "segment"])["width_mm"] for table in tables]
    differences = widths[1] - widths[0]
    bias = float(np.nanmedian(differences.to_numpy(float)))
    defects = tables[0].defects.set_index("defect_id")  # the first survey's mask: the same cracks in both
    cracks: dict[int, list[float]] = {index: [] for index in range(len(WIDENINGS_PX))}
    for defect_id, pieces in differences.groupby(level=0):
        values = pieces.to_numpy(float)
        values = values[np.isfinite(values)]
        group = group_of(defects.loc[defect_id, "geometry"], group_map, transform)
        if len(values) and group >= 0:
            cracks[group].append(float(np.median(values)) - bias)
    return {
        "piece_noise_mm": robust_sd(differences.to_numpy(float)),
        "bias_mm": bias,
        "groups": {
            f"+{WIDENINGS_PX[index]:g} px": {
                "cracks": len(values),
                "median_widening_mm": float(np.median(values)) if values else float("nan"),
                "spread_mm": robust_sd(np.asarray(values)),
            }
            for index, values in cracks.items()
        },
    }


def shares(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per group: the crack length rated, the share of it called widened (and extended, new), and
    the median widening its pieces would have been called widened at."""
    result = {}
    for index, widening in enumerate(WIDENINGS_PX):
        mine = [row for row in rows if row["group"] == index]
        total = sum(row["length_m"] for row in mine)
        result[f"+{widening:g} px"] = {
            "pieces": len(mine),
            "length_m": total,
            "detectable_widening_mm": float(np.nanmedian([row["detectable_mm"] for row in mine]))
            if mine
            else float("nan"),
            **{
                f"{status}_share": sum(row["length_m"] for row in mine if row["status"] == status) / total
                if total
                else float("nan")
                for status in ("widened", "unchanged", "extended", "new")
            },
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("pipeline/assets/msaf-dsnet.safetensors"))
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--size", type=int, default=2048, help="mosaic side in px")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--min-length", type=int, default=60, help="true cracks of fewer pixels are not rated")
    parser.add_argument("--sets", nargs="*", default=None, help="data sets (default: all with validation photos)")
    parser.add_argument("--work", type=Path, default=Path("bench-out/widening"), help="flights and surveys")
    parser.add_argument("--recompare", action="store_true", help="reuse the surveys in --work, compare again")
    parser.add_argument("--same-band", action="store_true", help="also read both flights over the same band")
    parser.add_argument(
        "--width-band", choices=["own", "same"], default=ReportConfig().width_band, help="compare's report.width_band"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = parser.parse_args()
    manifest = load_manifest(args.manifest)
    results: dict[str, dict] = {}
    for entry in manifest.sets:
        if entry.images is None or not entry.val or (args.sets and entry.name not in args.sets):
            continue
        work = args.work / entry.name
        surveys = [work / "first", work / "second"]
        if not args.recompare:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            first, truth, names = compose_val_mosaic(entry, manifest.classes, args.size, work, args.seed)
            widened = work / "widened.tif"
            shutil.copy(first, widened)
            group_map = widen_cracks(widened, truth, names.index("crack"), args.min_length, args.seed)
            np.save(work / "groups.npy", group_map)
            second = work / "second.tif"
            fly_again(widened, second)
            for ortho, folder in zip((first, second), surveys, strict=True):
                run_survey(ortho, folder, SurveyConfig(device="cpu", gsd_policy="ignore"), model_path=args.model)
        group_map = np.load(work / "groups.npy")
        changes = work / "changes"
        shutil.rmtree(changes, ignore_errors=True)
        compare_surveys(*surveys, changes, ReportConfig(width_band=args.width_band))
        own = gpd.read_file(changes / "changes.gpkg", layer="width_comparison")
        results[entry.name] = {
            "groups": shares(rated_groups(changes, work / f"{entry.name}_truth.tif", group_map)),
            "compare_piece_noise_mm": float(own["noise_mm"].iloc[0]),  # as the comparison read the widths
            "compare_band": str(own["band"].iloc[0]),
        }
        if args.same_band:
            results[entry.name]["same_band"] = same_band_widths(work, entry.name, group_map)
    table = Table(title=f"cracks called widened, by true widening (share of crack length; {args.model.name})")
    for column in (
        "set",
        "true widening",
        "pieces",
        "crack m",
        "widened",
        "unchanged",
        "extended",
        "new",
        "detectable",
    ):
        table.add_column(column)
    for name, result in results.items():
        for label, row in result["groups"].items():
            table.add_row(
                name,
                label,
                str(row["pieces"]),
                f"{row['length_m']:.2f}",
                *(f"{row[f'{s}_share']:.1%}" for s in ("widened", "unchanged", "extended", "new")),
                f"{row['detectable_widening_mm']:.2f} mm",
            )
    Console().print(table)
    for name, result in results.items():
        if "same_band" in result:
            band = result["same_band"]
            print(
                f"{name}: piece noise {result['compare_piece_noise_mm']:.2f} mm in the comparison "
                f"({result['compare_band']}), {band['piece_noise_mm']:.2f} mm over the first survey's band "
                "(each image's own ring); per crack (median, spread): "
                + ", ".join(
                    f"{label} {row['median_widening_mm']:+.2f} ± {row['spread_mm']:.2f} mm"
                    for label, row in band["groups"].items()
                )
            )
    if args.out:
        write_json(
            args.out, {"size": args.size, "model": str(args.model), "width_band": args.width_band, "sets": results}
        )


if __name__ == "__main__":
    main()
