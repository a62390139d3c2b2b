"""The inspector's review of a survey, kept in its defects.gpkg: one owner for the vocabulary and the layers.

Every defect carries a ``review`` field (``unreviewed`` until an inspector sets it, in QGIS with a
value-map widget); inspectors draw the cracks the model missed in ``missed_cracks`` and outline
what they looked at in ``reviewed_area``. ``msaf labels from-survey`` turns that into training labels,
and a report never overwrites a GeoPackage that holds such edits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from pipeline.errors import MsafError
from pipeline.vectors import layer_names, read_layer

REVIEW_FIELD = "review"
UNREVIEWED = "unreviewed"
CONFIRMED = "confirmed"
FALSE_ALARM = "false alarm"
REVIEW_STATES: tuple[str, ...] = (UNREVIEWED, CONFIRMED, FALSE_ALARM)
MISSED_LAYER = "missed_cracks"
AREA_LAYER = "reviewed_area"
# the editable layers written empty with every report: name -> (geometry type, attribute columns)
REVIEW_LAYERS: dict[str, tuple[str, dict[str, object]]] = {
    MISSED_LAYER: ("LineString", {"class": "crack", "width_mm": None, "note": ""}),
    AREA_LAYER: ("Polygon", {"note": ""}),
}


def empty_review_layers(crs: object) -> dict[str, gpd.GeoDataFrame]:
    """The two review layers, empty, in the survey's CRS (QGIS then offers them for editing)."""
    layers = {}
    for name, (_, columns) in REVIEW_LAYERS.items():
        data = {c: pd.Series([], dtype="object" if isinstance(v, str) else "float64") for c, v in columns.items()}
        layers[name] = gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)
    return layers


@dataclass(frozen=True)
class Review:
    """What an inspector said of a survey: the defects with their review state, drawn missed
    cracks and reviewed areas, all in the survey's CRS."""

    defects: gpd.GeoDataFrame
    missed: gpd.GeoDataFrame
    areas: gpd.GeoDataFrame

    @property
    def reviewed(self) -> gpd.GeoDataFrame:
        """The defects an inspector confirmed or rejected."""
        return self.defects[self.defects[REVIEW_FIELD].isin((CONFIRMED, FALSE_ALARM))]

    @property
    def has_edits(self) -> bool:
        """True when anything in it is an inspector's work (a report must not overwrite it)."""
        return bool(len(self.reviewed) or len(self.missed) or len(self.areas))


def read_review(gpkg: Path) -> Review:
    """Read a survey's review; a GeoPackage written before the review fields existed is one line."""
    if not gpkg.is_file():
        raise MsafError(f"no defects.gpkg in {gpkg.parent}; run `msaf report` on the survey first")
    try:
        layers = set(layer_names(gpkg))
        defects = read_layer(gpkg, "defects")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise MsafError(f"{gpkg}: not a readable survey GeoPackage ({str(exc)[:120]})") from None
    if REVIEW_FIELD not in defects:
        raise MsafError(
            f"{gpkg}: its defects have no `{REVIEW_FIELD}` field (written by an older release); "
            "re-run `msaf report` on the survey, then review it"
        )
    states = set(defects[REVIEW_FIELD].fillna(UNREVIEWED))
    if unknown := sorted(states - set(REVIEW_STATES)):
        raise MsafError(f"{gpkg}: review values {unknown} are not one of {list(REVIEW_STATES)}")
    defects[REVIEW_FIELD] = defects[REVIEW_FIELD].fillna(UNREVIEWED)
    empty = empty_review_layers(defects.crs)
    drawn = []
    for name in REVIEW_LAYERS:
        frame = read_layer(gpkg, name) if name in layers else empty[name]
        if frame.crs is not None and defects.crs is not None and frame.crs != defects.crs:
            frame = frame.to_crs(defects.crs)
        drawn.append(frame[frame.geometry.notna() & ~frame.geometry.is_empty])
    missed, areas = drawn
    return Review(defects, missed, areas)


def refuse_losing_review(gpkg: Path) -> None:
    """One line instead of overwriting an inspector's review with a fresh, unreviewed GeoPackage."""
    if not gpkg.is_file():
        return
    try:
        review = read_review(gpkg)
    except MsafError:
        return  # an older or foreign GeoPackage holds no review to lose
    if review.has_edits:
        raise MsafError(
            f"{gpkg} holds an inspector's review ({len(review.reviewed)} reviewed defects, {len(review.missed)} "
            f"missed cracks, {len(review.areas)} reviewed areas); turn it into labels with `msaf labels from-survey` "
            "and move it aside before re-running the report"
        )
