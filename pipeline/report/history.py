"""A crack's history over several surveys of one structure (``msaf history``).

A bridge is flown every year or two, and what an inspector monitors is each crack across all of
those flights: since when it is there, how fast it lengthens and widens. ``compare`` answers for
two surveys; this compares each survey with the one flown before it (each pair's full change
report under ``pairs/``) and each earlier survey with the latest (under ``to_latest/``), and follows
every crack through those comparisons: the pieces a comparison matched (its ``old_ids`` and
``new_ids``) and the pieces a report linked into one crack (``crack_id``) are one crack's, whatever
survey they lie in. Per crack and survey: its length (summed over its pieces), its widest width and
its pieces; per crack: when it was first and last seen, its growth per year between those flights,
and its trend (``trend``): growing only where the comparison of the survey it was first seen in with
the latest finds it extended or widened. A crack does not heal, so real growth between any two
flights is still there in that comparison, as is growth too slow for any one pair to see; one
flight's noise (a survey that read a crack wide) is not, unless it is the latest's.

A crack a survey between its first and the latest missed is still one crack (the comparison with
the latest joins its ends); one missed in the latest survey, or in the first, breaks its line, each
part "not seen in every survey". Every crack is drawn on the latest survey's ground: a crack not
in the latest where its last survey saw it, moved by that survey's registration to the latest.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from scipy.cluster.hierarchy import DisjointSet

from pipeline import styles
from pipeline.config import ReportConfig
from pipeline.errors import MsafError
from pipeline.fsutil import atomic_output
from pipeline.raster.ground import linear_unit_m
from pipeline.report import figures
from pipeline.report.build import plain_number, survey_image
from pipeline.report.change_status import ChangeStatus
from pipeline.report.compare import CHANGES_GPKG, compare_surveys, refuse_survey_folder
from pipeline.report.comparison_record import RECORD, record_comparison, recorded_comparison
from pipeline.report.crack_changes import FOUND_IN_ORDER
from pipeline.report.epochs import Epoch, flight_interval
from pipeline.report.html import Page
from pipeline.report.outputs import write_geopackage
from pipeline.report.registration import Registration
from pipeline.report.survey_layers import load_defects
from pipeline.survey_folder import SurveyFolder, prepare_output_folder
from pipeline.survey_record import SurveyRecord, read_survey_record
from pipeline.vectors import read_layer

HISTORY_GPKG, HISTORY_CSV = "history.gpkg", "history.csv"
HISTORY_OUTPUTS = (HISTORY_GPKG, HISTORY_CSV, SurveyFolder.HTML)
PAIRS = "pairs"  # each pair's change report, in a folder of its own
TO_LATEST = "to_latest"  # each earlier survey's change report against the latest (but the one before it)
GROWING, STABLE, NEW, LOST, GAPS = (
    "growing",  # the comparison of its first survey with the latest found it extended or widened
    "stable",  # in the first and the latest survey, and that comparison found it neither extended nor widened
    "new",  # appeared after the first survey, and the comparison that first saw it found it new
    "not found (repaired?)",  # not in the latest survey, and the comparison that lost it found it gone
    "not seen in every survey",  # missed where an image still showed it, too dark or blurred, or not flown
)
TRENDS = (GROWING, STABLE, NEW, LOST, GAPS)
GROWTH = {ChangeStatus.EXTENDED.value, ChangeStatus.WIDENED.value}
SHOWN = 25  # cracks in the report's table; all are in history.gpkg


@dataclass(frozen=True)
class HistoryResult:
    """What a history found and wrote: the CLI prints it."""

    cracks: int
    trends: dict[str, int]  # cracks per trend (TRENDS, in order)
    surveys: int
    outputs: tuple[str, ...]  # file names in the output folder
    comparisons: tuple[str, ...]  # the folders of change reports beside them (pairs/, to_latest/)
    reused: int = 0  # change reports used again: nothing they compared had changed (comparison_record)

    def summary(self) -> str:
        """E.g. '12 cracks over 3 surveys: 1 growing, 9 stable, ...': what the CLI and the inbox say."""
        trends = ", ".join(f"{count} {trend}" for trend, count in self.trends.items())
        again = f" ({self.reused} change reports used again: nothing they compared had changed)" if self.reused else ""
        return f"{self.cracks} cracks over {self.surveys} surveys: {trends}{again}"


@dataclass(frozen=True)
class Flight:
    """One survey of the history: its folder and its record (None for a folder without one)."""

    folder: Path
    record: SurveyRecord | None

    @property
    def name(self) -> str:
        """The survey folder's name: what the tables call it."""
        return self.folder.name

    @property
    def when(self) -> str | None:
        """When it was flown (the job's flight date, else when it was surveyed: ``Epoch.when``)."""
        return Epoch(self.folder, self.record).when if self.record is not None else None

    @property
    def dated(self) -> bool:
        """``when`` is a flight date, so intervals between flights mean something."""
        return self.record is not None and bool(self.record.job.get("flight_date"))


def flights_in_order(folders: Sequence[Path]) -> list[Flight]:
    """The surveys by flight (by when each was surveyed where a flight date is missing); in the
    order given when any has no record to tell."""
    resolved = [Path(folder).resolve() for folder in folders]
    if len(resolved) < 2:
        raise MsafError("a history needs two surveys or more; for one survey, its report is the history")
    if len(set(resolved)) < len(resolved):
        raise MsafError("a survey is given twice; give each survey of the structure once")
    flights = []
    for folder in folders:
        record = read_survey_record(Path(folder)) if Path(folder).is_dir() else None
        if not SurveyFolder(folder).mask.is_file() and not SurveyFolder(folder).gpkg.is_file():
            raise MsafError(f"{folder}: neither defects.gpkg nor mask.tif; is this a survey folder?")
        flights.append(Flight(Path(folder), record))
    if all(flight.when for flight in flights):
        flights.sort(key=lambda flight: str(flight.when))
    return flights


def _join(lineages: DisjointSet[Node], nodes: Sequence[Node]) -> None:
    """The pieces ``nodes`` are one crack through the surveys."""
    for node in nodes:
        lineages.add(node)
        lineages.merge(nodes[0], node)


def _ids(text: object) -> list[int]:
    """``"3,5"`` -> [3, 5] (a changes row's old_ids / new_ids; empty for none)."""
    return [int(part) for part in str(text).split(",") if part.strip()] if isinstance(text, str) else []


@dataclass(frozen=True)
class CrackLines:
    """The cracks followed through the surveys: per survey, the line (lineage) number of each of its
    crack pieces; per line, what the comparisons called its pieces."""

    lineage: list[np.ndarray]
    since_first: dict[int, set[str]]  # the statuses the comparison of its first survey with the latest gave it
    widening: dict[int, Widening]  # what that comparison read of its width, where it found the crack again
    arrival: dict[int, set[str]]  # the statuses its pieces got where they were first seen (as new pieces)
    departure: dict[int, set[str]]  # the statuses its pieces got where they were last seen (as old pieces)


Node = tuple[int, int]  # (survey index, defect_id): one crack piece of one survey


@dataclass(frozen=True)
class Widening:
    """A crack's widening from its first survey to the latest, as their comparison read it (over its
    pieces found again: the largest widening, less the flights' width offset, and the least widening
    any piece would have told from the noise, as ``crack_changes`` rolls pieces up)."""

    widening_mm: float = math.nan
    detectable_mm: float = math.nan

    @classmethod
    def of_rows(cls, rows: pd.DataFrame) -> Widening:
        """From the comparison's rows of one crack's pieces."""
        found = rows[rows["status"].isin(FOUND_IN_ORDER)]

        def column(name: str) -> np.ndarray:
            return found[name].to_numpy(float) if name in found else np.array([])

        widening, detectable = column("widening_mm"), column("detectable_widening_mm")
        return cls(
            float(np.nanmax(widening)) if np.isfinite(widening).any() else math.nan,
            float(np.nanmin(detectable)) if np.isfinite(detectable).any() else math.nan,
        )


def comparison_rows(
    cracks: list[gpd.GeoDataFrame], old: int, new: int, pair: pd.DataFrame
) -> list[tuple[str, list[Node], list[Node]]]:
    """A comparison's rows as (status, its pieces in survey ``old``, its pieces in survey ``new``)."""
    if not len(pair):  # two surveys without defects: a changes table without columns
        return []
    known = set(cracks[old]["defect_id"]), set(cracks[new]["defect_id"])
    return [
        (
            str(status),
            [(old, i) for i in _ids(old_ids) if i in known[0]],
            [(new, i) for i in _ids(new_ids) if i in known[1]],
        )
        for status, old_ids, new_ids in zip(pair["status"], pair["old_ids"], pair["new_ids"], strict=True)
    ]


def follow_cracks(
    cracks: list[gpd.GeoDataFrame], changes: list[pd.DataFrame], to_latest: dict[int, pd.DataFrame]
) -> CrackLines:
    """Lines of crack pieces, joined by the pieces of one crack (``crack_id``), by each pair's matches
    (``changes[k]``: survey k against survey k + 1) and by each earlier survey's matches with the
    latest (``to_latest[k]``: survey k against the last, for every earlier k: the last pair's is
    ``changes[-1]``), with the statuses of their pieces."""
    last = len(cracks) - 1
    lineages: DisjointSet[Node] = DisjointSet()  # (survey index, defect_id): one crack through the surveys
    for k, frame in enumerate(cracks):
        for defect_id in frame["defect_id"]:
            lineages.add((k, int(defect_id)))
        if "crack_id" in frame:
            for _, pieces in frame.groupby("crack_id")["defect_id"]:
                _join(lineages, [(k, int(i)) for i in pieces])
    as_old: dict[Node, str] = {}
    as_new: dict[Node, str] = {}
    for k, pair in enumerate(changes):
        for status, olds, news in comparison_rows(cracks, k, k + 1, pair):
            as_old |= dict.fromkeys(olds, status)
            as_new |= dict.fromkeys(news, status)
            if olds and news:
                _join(lineages, olds + news)
    with_latest: dict[int, list[tuple[str, list[Node], list[Node]]]] = {}
    for k, pair in to_latest.items():
        with_latest[k] = comparison_rows(cracks, k, last, pair)
        for _, olds, news in with_latest[k]:
            if olds and news:
                _join(lineages, olds + news)
    roots: dict[tuple[int, int], int] = {}
    lineage = [
        np.array([roots.setdefault(lineages[(k, int(i))], len(roots)) for i in frame["defect_id"]], dtype=int)
        for k, frame in enumerate(cracks)
    ]
    first = {line: k for k in reversed(range(len(cracks))) for line in lineage[k]}
    seen_last = {line: k for k in range(len(cracks)) for line in lineage[k]}
    since_first: dict[int, set[str]] = {line: set() for line in first}
    arrival: dict[int, set[str]] = {line: set() for line in first}
    departure: dict[int, set[str]] = {line: set() for line in first}
    line_of: dict[Node, int] = {}
    for k, frame in enumerate(cracks):
        for line, defect_id in zip(lineage[k], frame["defect_id"], strict=True):
            node = (k, int(defect_id))
            line_of[node] = line
            if k == first[line] and node in as_new:
                arrival[line].add(as_new[node])
            if k == seen_last[line] and node in as_old:
                departure[line].add(as_old[node])
    rows_since_first: dict[int, list[int]] = {}
    for k, rows in with_latest.items():
        for index, (status, olds, news) in enumerate(rows):
            for line in {line_of[node] for node in olds + news}:
                if first[line] == k:
                    since_first[line].add(status)
                    rows_since_first.setdefault(line, []).append(index)
    widening = {
        line: Widening.of_rows(to_latest[first[line]].iloc[indices]) for line, indices in rows_since_first.items()
    }
    return CrackLines(lineage, since_first, widening, arrival, departure)


def _years(first: Flight, last: Flight) -> float:
    """Years between two dated flights (``flight_interval``); NaN when either is undated or they are
    the same day."""
    interval = flight_interval(first.record, last.record)
    return interval.years if interval is not None and interval.days > 0 else math.nan


def trend(seen: list[int], surveys: int, since_first: set[str], arrival: set[str], departure: set[str]) -> str:
    """A line's trend from what the comparisons called its pieces (they weigh a width against its
    uncertainty and a survey-wide offset; a size rule here would call every flight's noise growth):
    growth from the comparison of the survey it was first seen in with the latest (``since_first``),
    the rest from the surveys it was seen in (``seen``: 1-based, of ``surveys``)."""
    if since_first & GROWTH:
        return GROWING
    if seen[-1] != surveys:
        return LOST if departure == {ChangeStatus.NOT_FOUND.value} else GAPS
    if seen[0] != 1:
        return NEW if arrival == {ChangeStatus.NEW.value} else GAPS
    return STABLE


def crack_tables(
    flights: list[Flight], cracks: list[gpd.GeoDataFrame], lines: CrackLines
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """``crack_history`` (one row per crack, in the latest survey's CRS) and ``crack_epochs`` (one row
    per crack and survey it was seen in)."""
    crs = cracks[-1].crs
    rows = []
    for k, (flight, frame) in enumerate(zip(flights, cracks, strict=True)):
        if not len(frame):
            continue
        per = frame.assign(lineage=lines.lineage[k]).groupby("lineage")
        sizes = pd.DataFrame(
            {
                "length_m": per["length_m"].sum(min_count=1),
                "max_width_mm": per["max_width_mm"].max(),
                "pieces": per.size(),
                "crack_ids": per["crack_id"].agg(lambda ids: ",".join(str(i) for i in sorted(set(ids)))),
            }
        )
        outlines = per["geometry"].agg(lambda shapes: shapely.union_all(shapes.to_numpy()))
        sizes["geometry"] = gpd.GeoSeries(outlines, crs=frame.crs).to_crs(crs).to_numpy()
        rows.append(sizes.assign(survey=k + 1, survey_name=flight.name, flown=flight.when).reset_index())
    epochs = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["lineage", "survey"])
    last = len(flights)
    history = []
    for _, seen in epochs.sort_values(["lineage", "survey"]).groupby("lineage"):
        line = int(seen["lineage"].iloc[0])
        first_row, last_row = seen.iloc[0], seen.iloc[-1]
        surveys = seen["survey"].tolist()
        years = _years(flights[surveys[0] - 1], flights[surveys[-1] - 1])
        history.append(
            {
                "lineage": line,
                "trend": trend(surveys, last, lines.since_first[line], lines.arrival[line], lines.departure[line]),
                "latest_crack_ids": last_row["crack_ids"] if surveys[-1] == last else "",
                "first_seen": flights[surveys[0] - 1].when or flights[surveys[0] - 1].name,
                "last_seen": flights[surveys[-1] - 1].when or flights[surveys[-1] - 1].name,
                "seen_in": len(surveys),
                "first_length_m": first_row["length_m"],
                "length_m": last_row["length_m"],
                "first_max_width_mm": first_row["max_width_mm"],
                "max_width_mm": last_row["max_width_mm"],
                "lengthening_m_per_year": (last_row["length_m"] - first_row["length_m"]) / years,
                "widening_mm_per_year": (last_row["max_width_mm"] - first_row["max_width_mm"]) / years,
                "widening_since_first_mm": lines.widening.get(line, Widening()).widening_mm,
                "detectable_widening_mm": lines.widening.get(line, Widening()).detectable_mm,
                "geometry": last_row["geometry"],
            }
        )
    table = gpd.GeoDataFrame(history, geometry="geometry", crs=crs) if history else _empty_history(crs)
    order = table["trend"].map({t: i for i, t in enumerate(TRENDS)}) if len(table) else table["trend"]
    table = table.assign(
        _o=order, _g=-table["lengthening_m_per_year"].fillna(0) - table["widening_mm_per_year"].fillna(0)
    )
    table = table.sort_values(["_o", "_g"]).drop(columns=["_o", "_g"]).reset_index(drop=True)
    numbers = dict(zip(table["lineage"], range(1, len(table) + 1), strict=True))
    table.insert(0, "crack", table.pop("lineage").map(numbers))
    epochs = epochs.assign(crack=epochs["lineage"].map(numbers)) if len(epochs) else epochs.assign(crack=[])
    columns = ["crack", "survey", "survey_name", "flown", "length_m", "max_width_mm", "pieces", "crack_ids"]
    return table, pd.DataFrame(epochs.reindex(columns=columns)).sort_values(["crack", "survey"], ignore_index=True)


HISTORY_COLUMNS = (
    "lineage",
    "trend",
    "latest_crack_ids",
    "first_seen",
    "last_seen",
    "seen_in",
    "first_length_m",
    "length_m",
    "first_max_width_mm",
    "max_width_mm",
    "lengthening_m_per_year",
    "widening_mm_per_year",
    "widening_since_first_mm",
    "detectable_widening_mm",
)  # crack_history's columns (and its geometry), also when no survey has a crack


def _empty_history(crs: pyproj.CRS) -> gpd.GeoDataFrame:
    numbers = {"seen_in": int} | {name: float for name in HISTORY_COLUMNS if name.endswith(("_m", "_mm", "_year"))}
    columns = {name: pd.Series(dtype=numbers.get(name, object)) for name in HISTORY_COLUMNS}
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=crs))


def _comparison_folder(flights: list[Flight], old: int, new: int, parent: Path) -> Path:
    """Where the change report of survey ``old`` against survey ``new`` goes: ``parent/01_<old>_to_<new>``."""
    return parent / f"{old + 1:02d}_{flights[old].name}_to_{flights[new].name}"


@dataclass(frozen=True)
class Comparison:
    """One change report of the history: its changes (in the working CRS) and how the new survey was
    moved onto the old one."""

    changes: gpd.GeoDataFrame
    registration: Registration
    reused: bool = False  # read from an earlier history's change report of the same two surveys


def _compared(flights: list[Flight], old: int, new: int, parent: Path, cfg: ReportConfig) -> Comparison:
    """Survey ``old`` compared with survey ``new`` (the change report in a folder of its own under
    ``parent``); the report an earlier history wrote there when nothing it compared has changed."""
    out = _comparison_folder(flights, old, new, parent)
    surveys = flights[old].folder, flights[new].folder
    registration = recorded_comparison(out, *surveys, cfg) if (out / CHANGES_GPKG).is_file() else None
    reused = registration is not None
    if registration is None:
        (out / RECORD).unlink(missing_ok=True)  # what it recorded no longer holds
        registration = compare_surveys(*surveys, out, cfg).registration
        record_comparison(out, *surveys, cfg, registration)
    changes = read_layer(out / CHANGES_GPKG, "changes")
    return Comparison(changes, registration, reused)


def on_latest_ground(frame: gpd.GeoDataFrame, onto_latest: Comparison | None) -> gpd.GeoDataFrame:
    """An earlier survey's cracks moved onto the latest survey's ground by the registration of their
    comparison with the latest (``onto_latest``, which moved the latest onto them); as they are
    where none was applied."""
    if onto_latest is None or not onto_latest.registration.applied or not len(frame):
        return frame
    working = onto_latest.changes.crs
    if working is None or frame.crs is None:
        return frame
    return onto_latest.registration.move_back(frame.to_crs(working)).to_crs(frame.crs)


def _drop_stale_comparisons(out_dir: Path, flights: list[Flight]) -> None:
    """Remove the change reports an earlier history into this folder wrote and this one did not
    (of other surveys), so that pairs/ and to_latest/ hold this history's comparisons only."""
    last = len(flights) - 1
    written = {_comparison_folder(flights, k, k + 1, out_dir / PAIRS) for k in range(last)}
    written |= {_comparison_folder(flights, k, last, out_dir / TO_LATEST) for k in range(last - 1)}
    for parent in (out_dir / PAIRS, out_dir / TO_LATEST):
        if not parent.is_dir():
            continue
        for folder in parent.iterdir():
            if folder not in written and (folder / CHANGES_GPKG).is_file():
                shutil.rmtree(folder)
        if not any(parent.iterdir()):
            parent.rmdir()


def crack_history(surveys: Sequence[Path], out_dir: Path, cfg: ReportConfig) -> HistoryResult:
    """Compare each survey with the one flown before it (``out_dir/pairs/``) and each earlier one with
    the latest (``out_dir/to_latest/``), and follow each crack through them: history.gpkg
    (``crack_history``, ``crack_epochs``, ``surveys``), history.csv (the crack_epochs table) and
    report.html in ``out_dir``."""
    out_dir = Path(out_dir)
    refuse_survey_folder(out_dir)
    flights = flights_in_order(surveys)
    prepare_output_folder(out_dir, HISTORY_OUTPUTS)
    pairs = [_compared(flights, k, k + 1, out_dir / PAIRS, cfg) for k in range(len(flights) - 1)]
    # every earlier survey against the latest: a comparison of its own, but the one before the latest's is its pair
    to_latest = {k: _compared(flights, k, len(flights) - 1, out_dir / TO_LATEST, cfg) for k in range(len(flights) - 2)}
    to_latest[len(flights) - 2] = pairs[-1]
    cracks = []
    for flight in flights:
        defects = load_defects(flight.folder, cfg)
        cracks.append(defects[defects["class"].isin(cfg.crack_classes)].reset_index(drop=True))
    lines = follow_cracks(cracks, [c.changes for c in pairs], {k: c.changes for k, c in to_latest.items()})
    placed = [on_latest_ground(frame, to_latest.get(k)) for k, frame in enumerate(cracks)]
    history, epochs = crack_tables(flights, placed, lines)
    surveys_table = pd.DataFrame(
        [
            {
                "survey": k + 1,
                "survey_name": f.name,
                "folder": str(f.folder),
                "flown": f.when,
                "flight_date": f.dated,
                "cracks": len(set(lines.lineage[k])),
                "crack_length_m": float(cracks[k]["length_m"].sum()),
            }
            for k, f in enumerate(flights)
        ]
    )
    write_geopackage(
        out_dir / HISTORY_GPKG, {"crack_history": history, "crack_epochs": epochs, "surveys": surveys_table}
    )
    with atomic_output(out_dir / HISTORY_CSV) as tmp:
        epochs.to_csv(tmp, index=False)
    trends = {trend: int((history["trend"] == trend).sum()) for trend in TRENDS}
    page = _page(flights, history, epochs, surveys_table, trends)
    with atomic_output(out_dir / SurveyFolder.HTML) as tmp:
        tmp.write_text(page.render())
    _drop_stale_comparisons(out_dir, flights)
    comparisons = (PAIRS, TO_LATEST) if len(flights) > 2 else (PAIRS,)
    # each comparison once: to_latest's last entry is the last pair
    reused = sum(c.reused for c in pairs) + sum(to_latest[k].reused for k in range(len(flights) - 2))
    return HistoryResult(len(history), trends, len(flights), HISTORY_OUTPUTS, comparisons, reused)


def _page(
    flights: list[Flight],
    history: gpd.GeoDataFrame,
    epochs: pd.DataFrame,
    surveys: pd.DataFrame,
    trends: dict[str, int],
) -> Page:
    """The history report: a map of the cracks by trend over the latest orthomosaic, the surveys, the
    cracks growing fastest, and their length and width survey by survey."""
    ortho = survey_image(flights[-1].record, None)
    crs = history.crs
    if len(history):
        minx, miny, maxx, maxy = history.total_bounds
        pad = max(maxx - minx, maxy - miny, 1e-6) * 0.05
        bounds = (minx - pad, miny - pad, maxx + pad, maxy + pad)
    else:
        bounds = (0.0, 0.0, 1.0, 1.0)
    units = linear_unit_m(crs) if crs is not None and not crs.is_geographic else 1.0
    overview = figures.overview_map(
        ortho,
        bounds,
        history,
        "trend",
        styles.HISTORY_COLOURS,
        units,
        f"Cracks since {flights[0].when or flights[0].name}",
    )
    shown = history.drop(columns="geometry").head(SHOWN)
    tables = [
        ("Surveys", surveys.drop(columns="folder").to_html(index=False, border=0, float_format=lambda v: f"{v:.3f}")),
        (
            f"Cracks, growing fastest first (the first {min(SHOWN, len(history))} of {len(history)})",
            shown.to_html(index=False, border=0, float_format=lambda v: plain_number(v, 3)),
        ),
    ]
    growing = history.loc[history["trend"] == GROWING, "crack"].head(10).tolist()
    plots = []
    if growing:
        lines = epochs[epochs["crack"].isin(growing)]
        plots.append(
            ("Crack length and width survey by survey", figures.timelines(lines, [f.when or f.name for f in flights]))
        )
    return Page(
        title=f"Crack history: {flights[0].name} → {flights[-1].name} ({len(flights)} surveys)",
        subtitle=", ".join(f"{count} {trend}" for trend, count in trends.items()),
        overview=overview,
        has_defects=bool(len(history)),
        tables=tables,
        figures=plots,
        provenance={f"survey {k + 1}": f"{f.folder} ({f.when or 'undated'})" for k, f in enumerate(flights)}
        | {"pairwise change reports": PAIRS + "/"}
        | ({"change reports against the latest survey": TO_LATEST + "/"} if len(flights) > 2 else {}),
        notes=[]
        if all(f.dated for f in flights)
        else [("note", "Growth per year needs a flight_date on every survey (--meta flight_date=YYYY-MM-DD).")],
    )
