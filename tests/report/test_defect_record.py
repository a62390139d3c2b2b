"""The defects layer's columns are owned by one record type."""

import math
from dataclasses import fields

from shapely.geometry import box

from pipeline.report.defects import DEFECT_COLUMNS, Defect
from pipeline.review import REVIEW_FIELD, UNREVIEWED


def test_a_defect_row_has_exactly_the_layer_columns_in_order():
    defect = Defect(
        defect_id=3,
        class_name="crack",
        area_m2=2e-5,
        pixels=20,
        centroid_x=1.0,
        centroid_y=2.0,
        bbox_minx=0.5,
        bbox_miny=1.5,
        bbox_maxx=1.5,
        bbox_maxy=2.5,
        geometry=box(0.5, 1.5, 1.5, 2.5),
    )
    row = defect.row()
    assert list(row) == [*DEFECT_COLUMNS, "geometry"]
    assert row["class"] == "crack" and row[REVIEW_FIELD] == UNREVIEWED and math.isnan(row["max_width_mm"])
    renamed = {"class_name": "class", "review": REVIEW_FIELD}
    assert sorted(renamed.get(f.name, f.name) for f in fields(Defect)) == sorted([*DEFECT_COLUMNS, "geometry"])
