"""Crack types as an inspector names them: transverse, longitudinal or diagonal to the member's
axis, map (pattern) cracking, or irregular.

The direction of a crack against the member it is in says what is likely behind it - flexure opens
cracks across a deck soffit or a girder, shear runs diagonal near a support, corroding bars and
restrained shrinkage follow the member, map cracking (a network closing in blocks of intact
surface) points at shrinkage or alkali-silica reaction - so an inspection names the type beside the
width. The axis comes from the element the crack lies in (its ``axis_deg`` field, else the long side
of its outline), else from the job (``axis_deg``); without one a straight crack is only ``linear``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

if TYPE_CHECKING:  # elements -> condition -> defects -> here: the type only
    from pipeline.report.elements import Elements

ALONG_DEG = 30.0  # within this of the axis: longitudinal
ACROSS_DEG = 60.0  # at least this from the axis: transverse; between the two: diagonal
MAP_CELLS = 3  # a crack that closes in this many blocks of intact surface is a network
IRREGULAR_SPREAD = 0.4  # extent across the main direction over extent along it: no single direction
OUTSIDE = "(outside the elements)"
ELONGATED = 1.2  # an outline whose long side is this much longer than its short side has an axis


class CrackType(StrEnum):
    """The ``crack_type`` column."""

    TRANSVERSE = "transverse"
    LONGITUDINAL = "longitudinal"
    DIAGONAL = "diagonal"
    MAP = "map"
    IRREGULAR = "irregular"
    LINEAR = "linear"  # one direction, but no axis to name it against


class AxisSource(StrEnum):
    """Where an axis came from (the report says)."""

    FIELD = "its field axis_deg"
    OUTLINE = "the long side of its outline"
    JOB = "job detail axis_deg"


@dataclass(frozen=True)
class Axis:
    """A member's axis: azimuth in [0, 180) degrees clockwise from grid north."""

    azimuth_deg: float
    source: AxisSource


@dataclass(frozen=True)
class CrackShape:
    """What the type is read from (``pipeline.report.measure.CrackMeasure``)."""

    orientation_deg: float  # azimuth of the main direction, [0, 180)
    spread: float  # 0 straight .. 1 no direction
    cells: int  # closed blocks of intact surface


def outline_axis(geometry: BaseGeometry) -> float | None:
    """Azimuth of the long side of the outline's minimum rotated rectangle; None for a squarish one."""
    rectangle = shapely.minimum_rotated_rectangle(geometry)
    if not isinstance(rectangle, shapely.Polygon):
        return None
    corners = np.asarray(rectangle.exterior.coords)[:3]
    sides = np.diff(corners, axis=0)
    lengths = np.hypot(sides[:, 0], sides[:, 1])
    long, short = (0, 1) if lengths[0] >= lengths[1] else (1, 0)
    if lengths[short] <= 0 or lengths[long] < ELONGATED * lengths[short]:
        return None
    east, north = sides[long]
    return math.degrees(math.atan2(east, north)) % 180


def angle_between(azimuth_a: float, azimuth_b: float) -> float:
    """The angle between two undirected lines, in [0, 90] degrees."""
    difference = abs(azimuth_a - azimuth_b) % 180
    return min(difference, 180 - difference)


def crack_type(shape: CrackShape, axis: Axis | None) -> tuple[CrackType, float]:
    """The crack's type and its angle to the axis (NaN without an axis or a single direction)."""
    if shape.cells >= MAP_CELLS:
        return CrackType.MAP, math.nan
    if shape.spread > IRREGULAR_SPREAD:
        return CrackType.IRREGULAR, math.nan
    if axis is None:
        return CrackType.LINEAR, math.nan
    angle = angle_between(shape.orientation_deg, axis.azimuth_deg)
    if angle <= ALONG_DEG:
        return CrackType.LONGITUDINAL, angle
    if angle >= ACROSS_DEG:
        return CrackType.TRANSVERSE, angle
    return CrackType.DIAGONAL, angle


@dataclass(frozen=True)
class StructureAxes:
    """Which element a defect lies in and which way that element runs; the job's axis elsewhere."""

    names: list[str]
    geometries: list[BaseGeometry]
    axes: list[Axis | None]
    job: Axis | None

    @classmethod
    def of(cls, elements: Elements | None, job_axis: float | None = None) -> StructureAxes:
        """Each element's axis: its ``axis_deg``, else its outline's long side, else the job's."""
        job = Axis(job_axis, AxisSource.JOB) if job_axis is not None else None
        if elements is None:
            return cls([], [], [], job)
        axes: list[Axis | None] = []
        for given, geometry in zip(elements.axes, elements.geometries, strict=True):
            outline = outline_axis(geometry)
            if given is not None:
                axes.append(Axis(given, AxisSource.FIELD))
            elif outline is not None:
                axes.append(Axis(outline, AxisSource.OUTLINE))
            else:
                axes.append(job)
        return cls(list(elements.names), list(elements.geometries), axes, job)

    def locate(self, geometry: BaseGeometry) -> tuple[str, Axis | None]:
        """The element holding most of a defect's polygon ("" when none) and the axis it is typed by."""
        if not self.names:
            return "", self.job
        overlap = shapely.area(shapely.intersection(geometry, self.geometries))
        if overlap.max() <= 0:
            return "", self.job
        best = int(np.argmax(overlap))
        return self.names[best], self.axes[best]

    def described(self) -> list[str]:
        """One line per axis, for the report: which element runs which way, and why."""
        lines = [
            f"{name}: {axis.azimuth_deg:.0f}° from grid north ({axis.source})" if axis else f"{name}: no axis"
            for name, axis in zip(self.names, self.axes, strict=True)
        ]
        if self.job is not None:
            where = "outside the elements" if self.names else "the structure"
            lines.append(f"{where}: {self.job.azimuth_deg:.0f}° from grid north ({self.job.source})")
        return lines


def types_table(cracks: pd.DataFrame) -> pd.DataFrame:
    """Cracks per type (and element, when any crack lies in one): cracks (pieces of mask linked into
    one, ``crack_id``), pieces, length, widest width."""
    typed = cracks[cracks["crack_type"].notna()]
    keys = ["crack_type"]
    if (typed["element"] != "").any():
        typed = typed.assign(element=typed["element"].replace("", OUTSIDE))
        keys = ["element", "crack_type"]
    return (
        typed.groupby(keys, sort=True)
        .agg(
            cracks=("crack_id", "nunique"),
            pieces=("defect_id", "size"),
            length_m=("length_m", "sum"),
            max_width_mm=("max_width_mm", "max"),
        )
        .reset_index()
    )


def cracks_by_type(defects: pd.DataFrame) -> dict[str, int]:
    """How many cracks (pieces linked into one) of each type, in the order of ``CrackType``."""
    typed = defects[defects["crack_type"].notna() & (defects["crack_id"] > 0)]
    counts = typed.groupby("crack_type")["crack_id"].nunique()
    return {kind.value: int(counts[kind.value]) for kind in CrackType if kind.value in counts.index}
