"""Does `msaf history` call the cracks that grew growing, slow growth included?

Per data set, its validation photos (never trained on) are composed into a 1-mm orthomosaic with
their truth and flown three times a year apart, as `bench/history_stability.py` flies them, but
the ground changes between flights: before each later flight a fifth of the true cracks widen by
0.5 px (1 px in all by the third: slow growth, under what one pair of flights reliably sees) and a
fifth by 1 px (2 px in all), as `bench/widening_detection.py` widens them (the same cracks both
times: the groups depend only on the truth and the seed); the rest stay as they were. All three
are surveyed with the model and followed by `crack_history`; each crack of the latest survey is
put on the true crack most of it lies on (its geometry moved back by the third flight's known
georeference offset), and the bench counts, by crack length, how much of each group was called
growing: the widened groups' share is the detection rate, the untouched group's the false alarm
rate.

    python bench/history_growth.py --model pipeline/assets/msaf-dsnet.safetensors \
        --manifest data/prepared/manifest.json --size 2048 --out metrics/history_growth.json

``--work DIR`` keeps the flights and surveys, ``--reuse`` follows them again without flying.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from change_stability import flights_arguments, fly_again  # beside this script
from history_stability import FLIGHTS, THIRD_OFFSET_M, THIRD_PHASE, histories, survey_flights, write_results
from rich.console import Console
from rich.table import Table
from widening_detection import WIDENINGS_PX, group_of, widen_cracks

from pipeline.config import ClassSpec
from pipeline.data.manifest import ManifestSet
from pipeline.report.history import GROWING
from pipeline.survey_accuracy import compose_val_mosaic

MIN_LENGTH_PX = 60  # true cracks shorter than this are not widened nor rated (as widening_detection)


def fly_growing(entry: ManifestSet, classes: list[ClassSpec], args: argparse.Namespace, work: Path) -> list[Path]:
    """Three flights of ground whose cracks widen between them, surveyed: the survey folders (the
    group of each true crack pixel is saved as ``<set>-groups.npy``)."""
    first, truth, names = compose_val_mosaic(entry, classes, args.size, work, args.seed)
    grown = [work / f"{entry.name}-grown-1.tif", work / f"{entry.name}-grown-2.tif"]
    shutil.copy(first, grown[0])
    groups = widen_cracks(grown[0], truth, names.index("crack"), MIN_LENGTH_PX, args.seed)
    shutil.copy(grown[0], grown[1])
    widen_cracks(grown[1], truth, names.index("crack"), MIN_LENGTH_PX, args.seed)
    np.save(work / f"{entry.name}-groups.npy", groups)
    orthos = [first, work / f"{entry.name}-2.tif", work / f"{entry.name}-3.tif"]
    fly_again(grown[0], orthos[1], seed=1)
    fly_again(grown[1], orthos[2], seed=2, offset_m=THIRD_OFFSET_M, phase=THIRD_PHASE)
    return survey_flights(orthos, entry.name, args, work)


def growing_by_group(history_dir: Path, truth: Path, groups: np.ndarray) -> dict[str, dict[str, float]]:
    """Per group of true widening: the latest survey's crack length on it and the share called growing."""
    cracks = gpd.read_file(history_dir / "history.gpkg", layer="crack_history")
    latest = cracks[cracks["last_seen"] == FLIGHTS[-1]]
    with rasterio.open(truth) as src:
        transform, crs = src.transform, src.crs
    back = latest.to_crs(crs).translate(-THIRD_OFFSET_M[0], -THIRD_OFFSET_M[1])
    on = np.array([group_of(geometry, groups, transform) for geometry in back])
    result = {}
    for index, widening in enumerate(WIDENINGS_PX):
        mine = latest[on == index]
        total = float(mine["length_m"].sum())
        grew = float(mine.loc[mine["trend"] == GROWING, "length_m"].sum())
        label = f"+{widening * 2:g} px by the third flight" if widening else "untouched"
        result[label] = {
            "cracks": len(mine),
            "length_m": total,
            "growing_share": grew / total if total else float("nan"),
            "stable_share": float(mine.loc[mine["trend"] == "stable", "length_m"].sum()) / total
            if total
            else float("nan"),
        }
    return result


def main() -> None:
    args = flights_arguments(__doc__, keeps_work=True)
    results = {
        name: growing_by_group(history, work / f"{name}_truth.tif", np.load(work / f"{name}-groups.npy"))
        for name, work, history in histories(args, fly_growing)
    }
    table = Table(title=f"cracks called growing over three flights, by true widening ({args.model.name})")
    for column in ("set", "true widening", "cracks", "crack m", "growing", "stable"):
        table.add_column(column)
    for name, rows in results.items():
        for label, row in rows.items():
            table.add_row(
                name,
                label,
                str(row["cracks"]),
                f"{row['length_m']:.2f}",
                f"{row['growing_share']:.1%}",
                f"{row['stable_share']:.1%}",
            )
    Console().print(table)
    write_results(args, results)


if __name__ == "__main__":
    main()
