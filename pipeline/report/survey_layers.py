"""A survey's report layers (defects.gpkg), read by whatever compares surveys: the change report,
the crack history, the benches."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio

from pipeline.config import ReportConfig
from pipeline.errors import MsafError
from pipeline.report.build import report_survey
from pipeline.survey_folder import SurveyFolder
from pipeline.vectors import layer_names, read_layer


def load_defects(survey_dir: Path, cfg: ReportConfig, layer: str = "defects") -> gpd.GeoDataFrame:
    """A layer of the survey's defects.gpkg (the report is built first if the survey has none yet)."""
    survey_dir = Path(survey_dir)
    gpkg = SurveyFolder(survey_dir).gpkg
    if not gpkg.is_file():
        if not SurveyFolder(survey_dir).mask.is_file():
            raise MsafError(f"{survey_dir}: neither defects.gpkg nor mask.tif; is this a survey folder?")
        report_survey(survey_dir, cfg)
    try:
        frame = read_layer(gpkg, layer)
    except pyogrio.errors.DataLayerError:
        raise MsafError(
            f"{gpkg} has no layer {layer!r} (deleted in a GIS, or written by an older release); "
            "re-run `msaf report` on that survey"
        ) from None
    except pyogrio.errors.DataSourceError:
        raise MsafError(f"{gpkg} is not a GeoPackage; re-run `msaf report` on that survey") from None
    if frame.crs is None:
        raise MsafError(f"{gpkg}: {layer} have no CRS")
    return frame


def condition_cells(survey_dir: Path, cfg: ReportConfig) -> gpd.GeoDataFrame | None:
    """The survey's condition map, or None when its report predates condition states."""
    if "condition_cells" not in layer_names(SurveyFolder(survey_dir).gpkg):
        return None
    return load_defects(survey_dir, cfg, "condition_cells")
