"""How much growth `msaf history` reports over three flights of a structure that did not change.

Per data set, its validation photos (never trained on) are composed into a 1-mm orthomosaic and
flown twice more as `bench/change_stability.py` flies a second flight (another georeference,
pixel phase, light, blur, noise and JPEG), the third with its own offset and phase; the flights
are dated a year apart. All three are surveyed with the model and `crack_history` follows every
crack through them. Every crack is the same crack on all three: a crack called growing, new or not
found (repaired?) is a false trend, and one "not seen in every survey" a detection gap; each is
counted and given as a share of crack length (of the latest survey's; of the first survey's for the
cracks not found since).

    python bench/history_stability.py --model pipeline/assets/msaf-dsnet.safetensors \
        --manifest data/prepared/manifest.json --size 2048 --out metrics/history_stability.json
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import geopandas as gpd
from change_stability import flights_arguments, fly_again  # beside this script
from rich.console import Console
from rich.table import Table

from pipeline.config import ClassSpec, ReportConfig, SurveyConfig
from pipeline.data.manifest import ManifestSet, load_manifest
from pipeline.fsutil import write_json
from pipeline.report.history import GAPS, GROWING, LOST, NEW, STABLE, TRENDS, crack_history
from pipeline.survey import run_survey
from pipeline.survey_accuracy import compose_val_mosaic

FLIGHTS = ("2024-06-01", "2025-06-01", "2026-06-01")
THIRD_OFFSET_M, THIRD_PHASE = (-0.052, 0.067), (-0.25, 0.35)


def trend_shares(history_dir: Path) -> dict[str, object]:
    """Cracks per trend and the crack length of each trend, as a share (of the latest survey's crack
    length; of the first survey's for the cracks not found since)."""
    cracks = gpd.read_file(history_dir / "history.gpkg", layer="crack_history")
    counts = cracks["trend"].value_counts().to_dict()
    first_m = float(cracks.loc[cracks["first_seen"] == FLIGHTS[0], "first_length_m"].sum())
    latest = cracks[cracks["last_seen"] == FLIGHTS[-1]]
    latest_m = float(latest["length_m"].sum())

    def share(trend: str) -> float:
        if trend == LOST:
            return float(cracks.loc[cracks["trend"] == LOST, "length_m"].sum()) / first_m if first_m else float("nan")
        return float(latest.loc[latest["trend"] == trend, "length_m"].sum()) / latest_m if latest_m else float("nan")

    stable = cracks.loc[cracks["trend"] == STABLE, "detectable_widening_mm"].dropna()
    return {
        "cracks": len(cracks),
        # what a stable crack is stable to: the widening its first-vs-latest comparison could have missed
        "stable_detectable_widening_mm": float(stable.median()) if len(stable) else float("nan"),
        **{f"count_{trend}": int(counts.get(trend, 0)) for trend in TRENDS},
        **{
            f"{key}_share": share(trend)
            for key, trend in (("growing", GROWING), ("stable", STABLE), ("new", NEW), ("lost", LOST), ("gaps", GAPS))
        },
    }


def survey_flights(orthos: list[Path], name: str, args: argparse.Namespace, work: Path) -> list[Path]:
    """The three flights surveyed, dated a year apart: the survey folders."""
    surveys = [work / f"{name}-{date}" for date in FLIGHTS]
    for ortho, folder, date in zip(orthos, surveys, FLIGHTS, strict=True):
        cfg = SurveyConfig(device="cpu", gsd_policy="ignore")
        run_survey(ortho, folder, cfg, model_path=args.model, job={"flight_date": date})
    return surveys


def fly_three(entry: ManifestSet, classes: list[ClassSpec], args: argparse.Namespace, work: Path) -> list[Path]:
    """The set's validation mosaic and its two later flights, each surveyed: the survey folders."""
    first, _, _ = compose_val_mosaic(entry, classes, args.size, work, args.seed)
    orthos = [first, work / f"{entry.name}-2.tif", work / f"{entry.name}-3.tif"]
    fly_again(first, orthos[1], seed=1)
    fly_again(first, orthos[2], seed=2, offset_m=THIRD_OFFSET_M, phase=THIRD_PHASE)
    return survey_flights(orthos, entry.name, args, work)


Flights = Callable[[ManifestSet, list[ClassSpec], argparse.Namespace, Path], list[Path]]


def histories(args: argparse.Namespace, fly: Flights) -> Iterator[tuple[str, Path, Path]]:
    """Per set with validation photos: its three flights (``fly``, or the surveys ``--reuse`` finds
    in ``--work``) followed by ``crack_history``: the set's name, the work folder and the history's."""
    manifest = load_manifest(args.manifest)
    with tempfile.TemporaryDirectory(prefix="msaf-history-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for entry in manifest.sets:
            if entry.images is None or not entry.val:
                continue
            if args.reuse:
                surveys = [work / f"{entry.name}-{date}" for date in FLIGHTS]
            else:
                surveys = fly(entry, manifest.classes, args, work)
            history = work / f"{entry.name}-history"
            crack_history(surveys, history, ReportConfig(width_band=args.width_band))
            yield entry.name, work, history


def main() -> None:
    args = flights_arguments(__doc__, keeps_work=True)
    results = {name: trend_shares(history) for name, _, history in histories(args, fly_three)}
    table = Table(
        title=f"false trends over three flights of unchanged ground ({args.size}² mosaics, {args.model.name})"
    )
    for column in ("set", "cracks", *TRENDS, "stable length", "growing length", "new length", "not-found length"):
        table.add_column(column)
    for name, row in results.items():
        table.add_row(
            name,
            str(row["cracks"]),
            *(str(row[f"count_{trend}"]) for trend in TRENDS),
            f"{row['stable_share']:.1%}",
            f"{row['growing_share']:.1%}",
            f"{row['new_share']:.1%}",
            f"{row['lost_share']:.1%}",
        )
    Console().print(table)
    write_results(args, results)


def write_results(args: argparse.Namespace, results: dict[str, dict]) -> None:
    """The sets' results to ``--out`` (if given), with the run's size, model, flights and band."""
    if args.out:
        summary = {"size": args.size, "model": str(args.model), "flights": FLIGHTS, "width_band": args.width_band}
        write_json(args.out, summary | {"sets": results})


if __name__ == "__main__":
    main()
