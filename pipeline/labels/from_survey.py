"""`msaf labels from-survey`: an inspector's review of a survey becomes a label set on its orthomosaic's grid.

Only reviewed evidence becomes a label: a confirmed defect keeps its mask pixels, a false alarm
becomes background, a drawn missed crack is burnt in at its width, and inside the reviewed area
(or, without one, within ``margin_px`` of the reviewed defects and drawn cracks) whatever the model
called background is background. Model output nobody reviewed (unreviewed defects, joints) and
everything outside the reviewed area is ignored (255), as is the survey's nodata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.class_ids import NO_CLASS
from pipeline.config import ReportConfig
from pipeline.errors import MsafError
from pipeline.fingerprint import file_fingerprint
from pipeline.labels.burn import Shapes
from pipeline.labels.labelset import LABELS_NAME, RECORD_NAME, LabelSetRecord, VectorSource, write_labelset
from pipeline.labels.rasterize import Grid, label_shapes
from pipeline.raster.grid import Box
from pipeline.report.component_measure import open_mask
from pipeline.review import CONFIRMED, FALSE_ALARM, read_review
from pipeline.survey_folder import SURVEY_OUTPUTS, SurveyFolder, refuse_overwriting
from pipeline.survey_record import read_survey_record

REVIEW_MARGIN_PX = 32  # without a reviewed area: how far around reviewed items the inspector is taken to have looked
OUTLINE_SLACK_PX = 1.0  # defect polygons are simplified outlines of mask pixels: widened by this to cover them


def labels_from_survey(
    survey_dir: Path, out_dir: Path, cfg: ReportConfig, *, margin_px: float = REVIEW_MARGIN_PX
) -> LabelSetRecord:
    """Turn the reviewed survey in ``survey_dir`` into a label set in ``out_dir``."""
    survey_dir = Path(survey_dir)
    refuse_overwriting(
        [survey_dir / name for name in (*SURVEY_OUTPUTS, SurveyFolder.GPKG)],
        out_dir,
        (LABELS_NAME, RECORD_NAME),
        "labelling",
    )
    record = read_survey_record(survey_dir)
    if record is None:
        raise MsafError(f"{survey_dir}: no survey.json; point at a survey folder made by `msaf survey`")
    gpkg = SurveyFolder(survey_dir).gpkg
    review = read_review(gpkg)
    if not review.has_edits:
        raise MsafError(
            f"{gpkg}: nothing reviewed yet; in QGIS set `review` on the defects you checked, draw missed "
            "cracks in `missed_cracks` and what you looked at in `reviewed_area`, save, then run this again"
        )
    classes = record.model.classes
    with open_mask(SurveyFolder(survey_dir).mask) as mask:
        grid = Grid(mask.width, mask.height, mask.crs, mask.transform, record.input.gsd_m or abs(mask.transform.a))
        pixel = abs(mask.transform.a)
        missed = review.missed.copy()
        missed["class"] = missed["class"].fillna("crack") if "class" in missed else "crack"
        drawn = label_shapes(missed, grid, classes, cfg.non_defect_classes, "class", "width_mm")
        reviewed = review.reviewed
        if len(review.areas):
            region = Shapes(list(review.areas.geometry.values), [1] * len(review.areas))
        else:
            near = [*reviewed.geometry.values, *review.missed.geometry.values]
            region = Shapes([g.buffer(margin_px * pixel) for g in near], [1] * len(near))
        false_alarms = reviewed[reviewed["review"] == FALSE_ALARM]
        rejected = Shapes([g.buffer(OUTLINE_SLACK_PX * pixel) for g in false_alarms.geometry], [1] * len(false_alarms))
        confirmed = reviewed[reviewed["review"] == CONFIRMED]
        kept = Shapes(
            [g.buffer(OUTLINE_SLACK_PX * pixel) for g in confirmed.geometry],
            [classes.index(c) for c in confirmed["class"]],
        )

        def label_window(box: Box, transform: Any) -> np.ndarray:
            shape = (box.height, box.width)
            predicted = mask.read(1, window=box.window)
            out = np.full(shape, NO_CLASS, dtype=np.uint8)
            out[region.cover(shape, transform) & (predicted == 0)] = 0  # looked at, nothing there
            out[rejected.cover(shape, transform)] = 0
            confirmed_class = kept.burn(np.zeros(shape, dtype=np.uint8), transform)
            keep = (confirmed_class > 0) & (predicted == confirmed_class)
            out[keep] = predicted[keep]
            drawn.burn(out, transform)
            out[predicted == NO_CLASS] = NO_CLASS
            return out

        sources = [
            VectorSource(
                path=str(gpkg.resolve()),
                fingerprint=file_fingerprint(gpkg),
                features=len(reviewed) + len(review.missed) + len(review.areas),
            )
        ]
        return write_labelset(
            out_dir,
            grid,
            classes,
            label_window,
            origin="review",
            image=record.input.path,
            image_fingerprint=record.input.fingerprint,
            gsd_m=grid.gsd_m,
            sources=sources,
            survey=str(survey_dir.resolve()),
        )
