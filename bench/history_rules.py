"""Which rule should call a crack growing over several flights? Three, on the same surveys.

Reads the surveys and the comparisons that the last runs of `bench/history_stability.py`
(unchanged ground) and `bench/history_growth.py` (cracks widening by 0.5 or 1 px per flight) left
in their ``--work`` folders (with their ``--width-band``), follows the cracks again
(``follow_cracks``) and calls a crack growing by each rule:

* ``first vs latest`` (shipped): the comparison of the survey it was first seen in with the latest
  found it extended or widened;
* ``any pair`` (the last release's): a comparison of two consecutive flights did;
* ``both``: a consecutive pair did and the first-vs-latest comparison did.

Per set: the share of the latest survey's crack length called growing, per piece of that survey
(on unchanged ground; per group of true widening on the growing ground).

    python bench/history_stability.py --work bench-out/history
    python bench/history_growth.py --work bench-out/history-growth
    python bench/history_rules.py --stability bench-out/history --growth bench-out/history-growth
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from history_stability import FLIGHTS, THIRD_OFFSET_M  # beside this script
from rich.console import Console
from rich.table import Table
from widening_detection import group_of

from pipeline.config import ReportConfig
from pipeline.report.compare import CHANGES_GPKG
from pipeline.report.history import GROWTH, PAIRS, TO_LATEST, comparison_rows, flights_in_order, follow_cracks
from pipeline.report.survey_layers import load_defects

SETS = ("crackforest", "uav75", "masonry")


def _changes(folder: Path) -> list[pd.DataFrame]:
    return [gpd.read_file(f / CHANGES_GPKG, layer="changes") for f in sorted(folder.iterdir())]


def rules_on(work: Path, name: str) -> tuple[gpd.GeoDataFrame, dict[str, set[int]]]:
    """The latest survey's crack pieces (with their line) and, per rule, the lines it calls growing."""
    cfg = ReportConfig()
    flights = flights_in_order([work / f"{name}-{date}" for date in FLIGHTS])
    cracks = []
    for flight in flights:
        defects = load_defects(flight.folder, cfg)
        cracks.append(defects[defects["class"].isin(cfg.crack_classes)].reset_index(drop=True))
    history = work / f"{name}-history"
    pairs = _changes(history / PAIRS)
    to_latest = dict(enumerate(_changes(history / TO_LATEST))) | {len(pairs) - 1: pairs[-1]}
    lines = follow_cracks(cracks, pairs, to_latest)
    line_of = {
        (k, int(i)): line
        for k, frame in enumerate(cracks)
        for line, i in zip(lines.lineage[k], frame["defect_id"], strict=True)
    }
    pairwise = set()
    for k, pair in enumerate(pairs):
        for status, olds, news in comparison_rows(cracks, k, k + 1, pair):
            if status in GROWTH:
                pairwise |= {line_of[node] for node in olds + news}
    spanning = {line for line, statuses in lines.since_first.items() if statuses & GROWTH}
    latest = cracks[-1].assign(line=lines.lineage[-1])
    return latest, {"first vs latest": spanning, "any pair": pairwise, "both": spanning & pairwise}


def growing_share(pieces: gpd.GeoDataFrame, growing: set[int]) -> float:
    total = float(pieces["length_m"].sum())
    return float(pieces.loc[pieces["line"].isin(growing), "length_m"].sum()) / total if total else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stability", type=Path, default=Path("bench-out/history"))
    parser.add_argument("--growth", type=Path, default=Path("bench-out/history-growth"))
    args = parser.parse_args()
    table = Table(title="share of crack length called growing: unchanged ground / +1 px / +2 px by the third flight")
    table.add_column("rule")
    for name in SETS:
        table.add_column(name)
    cells: dict[str, list[str]] = {}
    for name in SETS:
        unchanged, rules = rules_on(args.stability, name)
        grown, grown_rules = rules_on(args.growth, name)
        groups = np.load(args.growth / f"{name}-groups.npy")
        with rasterio.open(args.growth / f"{name}_truth.tif") as src:
            transform, crs = src.transform, src.crs
        back = grown.to_crs(crs).translate(-THIRD_OFFSET_M[0], -THIRD_OFFSET_M[1])
        grown = grown.assign(group=[group_of(geometry, groups, transform) for geometry in back])
        for rule in rules:
            shares = [growing_share(unchanged, rules[rule])]
            shares += [growing_share(grown[grown["group"] == g], grown_rules[rule]) for g in (1, 2)]
            cells.setdefault(rule, []).append(" / ".join(f"{share:.1%}" for share in shares))
    for rule, row in cells.items():
        table.add_row(rule, *row)
    Console().print(table)


if __name__ == "__main__":
    main()
