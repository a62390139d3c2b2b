"""One change per crack, not per piece of mask.

The comparison rates each piece of a new crack's mask on its own (``compare``), and a survey's mask
breaks a drone-wall crack into ~3.7 pieces (``bench/crack_types.py``), which the report links back
into one crack (``crack_id``, ``pipeline.report.linking``). A piece found again beside a piece that
was not is a crack that grew past its old tip, not an old crack and a new one; rated piece by
piece it read as both. This rolls the piece rows up into one row per crack of the new survey:

* some of its pieces found again and some new: extended, by the new pieces' length and whatever
  the found pieces added;
* all found: extended, widened or unchanged, the first of those any piece is;
* none found: new if any piece is new, else what most of its pieces are (missed before, not seen,
  not covered).

Lost old cracks stay as the comparison rated them: they belong to no crack of the new survey.
"""

from __future__ import annotations

from collections.abc import Iterable

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.report.change_status import ChangeStatus

FOUND_IN_ORDER = (ChangeStatus.EXTENDED.value, ChangeStatus.WIDENED.value, ChangeStatus.UNCHANGED.value)
CRACK_CHANGE_COLUMNS = [
    "crack_id",
    "status",
    "crack_type",
    "pieces",
    "piece_statuses",
    "change_ids",
    "new_ids",
    "old_ids",
    "new_length_m",
    "delta_length_m",
    "widening_mm",
    "detectable_widening_mm",
]


def ids_of(text: object) -> list[int]:
    """The ids of a comma-separated ids cell (``new_ids``, ``old_ids``)."""
    return [int(part) for part in str(text or "").split(",") if part.strip()]


def _joined(values: Iterable[object]) -> str:
    return ",".join(str(value) for value in values)


def _crack_status(statuses: list[str]) -> str:
    """A crack's status from its pieces' (see the module's rules)."""
    found = [status for status in statuses if status in FOUND_IN_ORDER]
    if found and ChangeStatus.NEW.value in statuses:
        return ChangeStatus.EXTENDED.value
    if found:
        return next(status for status in FOUND_IN_ORDER if status in found)
    if ChangeStatus.NEW.value in statuses:
        return ChangeStatus.NEW.value
    return pd.Series(statuses).mode().iloc[0]


def changes_per_crack(
    changes: gpd.GeoDataFrame, new_defects: pd.DataFrame, crack_classes: Iterable[str]
) -> gpd.GeoDataFrame:
    """One row per crack of the new survey (``crack_id``) that the piece rows of ``changes`` name,
    in the changes' CRS. Empty when the new survey's report predates crack ids."""
    empty = gpd.GeoDataFrame({c: [] for c in CRACK_CHANGE_COLUMNS}, geometry=gpd.GeoSeries([], crs=changes.crs))
    if "crack_id" not in new_defects or not len(changes):
        return empty
    crack_of = dict(zip(new_defects["defect_id"].astype(int), new_defects["crack_id"], strict=True))
    type_of = (
        dict(zip(new_defects["crack_id"], new_defects["crack_type"], strict=True))
        if "crack_type" in new_defects
        else {}
    )
    pieces = changes[changes["class"].isin(list(crack_classes))]
    first_new = pieces["new_ids"].map(lambda text: next(iter(ids_of(text)), None))
    pieces = pieces.assign(crack_id=first_new.map(crack_of))
    pieces = pieces[pieces["crack_id"].notna()]
    if not len(pieces):
        return empty
    rows = []
    for crack_id, group in pieces.groupby("crack_id", sort=True):
        statuses = group["status"].astype(str).tolist()
        found = group[group["status"].isin(FOUND_IN_ORDER)]
        widening = found["widening_mm"].to_numpy(float) if "widening_mm" in found else np.array([])
        detectable = (  # the crack is widened when any piece is: the least any piece would have told
            found["detectable_widening_mm"].to_numpy(float) if "detectable_widening_mm" in found else np.array([])
        )
        kind = type_of.get(crack_id)
        rows.append(
            {
                "crack_id": int(crack_id),
                "status": _crack_status(statuses),
                "crack_type": kind if isinstance(kind, str) else None,
                "pieces": len(group),
                "piece_statuses": _joined(sorted(set(statuses))),
                "change_ids": _joined(group["change_id"]),
                "new_ids": _joined(i for text in group["new_ids"] for i in ids_of(text)),
                "old_ids": _joined(sorted({i for text in group["old_ids"] for i in ids_of(text)})),
                "new_length_m": float(group["new_length_m"].sum()),
                "delta_length_m": float(group["delta_length_m"].fillna(0.0).sum()),
                "widening_mm": float(np.nanmax(widening)) if np.isfinite(widening).any() else np.nan,
                "detectable_widening_mm": float(np.nanmin(detectable)) if np.isfinite(detectable).any() else np.nan,
                "geometry": group.geometry.union_all(),
            }
        )
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=changes.crs)
