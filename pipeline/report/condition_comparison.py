"""Two surveys' condition states side by side, on the ground both imaged; and the ground either
orthomosaic could not show a crack on, where a new or lost defect is "not seen" rather than a change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.config import ReportConfig
from pipeline.report.change_status import ChangeStatus
from pipeline.report.condition import cannot_show_cracks, condition_change, quantities
from pipeline.report.elements import read_elements
from pipeline.report.registration import Registration
from pipeline.report.survey_layers import condition_cells


def outside(geometries: gpd.GeoSeries, ground: BaseGeometry | None) -> np.ndarray:
    """Bool per geometry: under half of it lies on ``ground`` (none given: nothing is outside)."""
    if ground is None:
        return np.zeros(len(geometries), bool)
    area = geometries.area.to_numpy()
    inside = geometries.intersection(ground).area.to_numpy()
    return inside < 0.5 * np.maximum(area, 1e-300)


def unrated_ground(survey_dir: Path, cfg: ReportConfig, crs: pyproj.CRS) -> BaseGeometry | None:
    """The ground a survey's orthomosaic could not show a crack on (its condition cells too dark,
    overexposed or too blurred), in ``crs``; None where there is none or the report did not read the image."""
    cells = condition_cells(survey_dir, cfg)
    if cells is None:
        return None
    unrated = cannot_show_cracks(cells)
    return cells[unrated].to_crs(crs).union_all() if unrated.any() else None


def not_seen(
    changes: gpd.GeoDataFrame, old_unrated: BaseGeometry | None, new_unrated: BaseGeometry | None
) -> gpd.GeoDataFrame:
    """A defect not found that lies mostly where the new orthomosaic could not show it, or a new one
    where the old could not, is "not seen": the image, not the structure, may be what changed.
    Both grounds are in the changes' frame."""
    for status, unrated in ((ChangeStatus.NOT_FOUND.value, new_unrated), (ChangeStatus.NEW.value, old_unrated)):
        rows = changes.index[changes["status"] == status]
        if unrated is None or not len(rows):
            continue
        hidden = ~outside(changes.geometry.loc[rows], unrated)
        changes.loc[rows[hidden], "status"] = ChangeStatus.NOT_SEEN.value
    return changes


@dataclass(frozen=True)
class ConditionComparison:
    """Both epochs' area per condition state on the ground both imaged, and per element when the
    params name the structure's elements (``report.elements``)."""

    whole: pd.DataFrame
    by_element: pd.DataFrame | None = None

    @property
    def change_m2(self) -> dict[str, float]:
        """Square metres gained (lost: negative) per condition state on the common ground."""
        states, change = self.whole["condition_state"].astype(str), self.whole["change_m2"].astype(float)
        return dict(zip(states, change, strict=True))


def compare_condition(
    old_dir: Path,
    new_dir: Path,
    cfg: ReportConfig,
    crs: pyproj.CRS,
    common: Callable[[pyproj.CRS], BaseGeometry | None],
    registration: Registration,
) -> ConditionComparison | str:
    """Each epoch's area per condition state on the ground both imaged, side by side (the new
    epoch's cells moved onto the old survey); or why not."""
    old, new = condition_cells(old_dir, cfg), condition_cells(new_dir, cfg)
    if old is None or new is None:
        missing = " and ".join(str(folder) for folder, frame in ((old_dir, old), (new_dir, new)) if frame is None)
        return (
            f"Condition states not compared: {missing} was reported before condition states "
            "existed; re-run `msaf report` on it."
        )
    ground = common(crs)
    old, new = old.to_crs(crs), registration.move(new.to_crs(crs))

    def change(within: BaseGeometry | None) -> pd.DataFrame:
        return condition_change(quantities(old, within), quantities(new, within))

    if cfg.elements is None:
        return ConditionComparison(change(ground))
    elements = read_elements(cfg.elements, crs)
    per_element = [
        change(shapely.intersection(shape, ground) if ground is not None else shape).assign(element=name)
        for name, shape in zip(elements.names, elements.geometries, strict=True)
    ]
    table = pd.concat(per_element, ignore_index=True)
    return ConditionComparison(change(ground), table[["element", *table.columns.drop("element")]])
