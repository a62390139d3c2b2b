"""survey.json and the metrics files are written and read through their typed models."""

import json
import math
import os
import shutil

import pytest

from pipeline.errors import MsafError
from pipeline.metrics import SegmentationMetrics
from pipeline.metrics.summary import EvaluationSummary, read_evaluation
from pipeline.survey_record import RECORD_VERSION, SurveyRecord, read_survey_record
from tests.conftest import assert_one_line_error, msaf_in_process, run_msaf


def test_survey_json_round_trips_through_the_record(surveyed):
    record = read_survey_record(surveyed)
    assert isinstance(record, SurveyRecord) and record.record_version == RECORD_VERSION
    on_disk = json.loads((surveyed / "survey.json").read_text())
    assert on_disk == record.model_dump(mode="json")
    assert record.input.width == 700 and record.input.height == 530 and record.tiling.blocks >= 1
    assert sum(record.class_pixels.values()) > 0 and record.model.classes[0] == "background"
    assert read_survey_record(surveyed / "nowhere") is None  # no record: the report uses the mask's tags


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda r: r | {"record_version": RECORD_VERSION + 1}, "written by a newer msaf-pipeline"),
        (lambda r: {k: v for k, v in r.items() if k != "model"}, r"is not a survey record \(model: Field required\)"),
        (lambda r: r | {"tiling": r["tiling"] | {"blocks": "many"}}, r"is not a survey record \(tiling.blocks"),
        (lambda r: r | {"surprise": 1}, r"is not a survey record \(surprise: Extra inputs"),
    ],
)
def test_a_foreign_or_newer_record_is_one_line(tmp_path, surveyed, edit, expected):
    folder = tmp_path / "copy"
    shutil.copytree(surveyed, folder)
    record = json.loads((folder / "survey.json").read_text())
    (folder / "survey.json").write_text(json.dumps(edit(record)))
    with pytest.raises(MsafError, match=expected):
        read_survey_record(folder)
    assert_one_line_error(msaf_in_process("report", str(folder)), expected.split(" (")[0].replace("\\", ""))


def _evaluation() -> EvaluationSummary:
    import numpy as np

    metrics = SegmentationMetrics(["background", "crack"], tolerance_px=1, width_classes=[1])
    truth = np.zeros((20, 20), np.uint8)
    truth[10, 2:18] = 1
    metrics.update(np.roll(truth, 1, axis=0), truth)
    part = metrics.compute().model_copy(update={"images": 1, "score": 1.0})
    return EvaluationSummary(
        **part.model_dump(exclude={"score"}, exclude_none=True),
        sets={"a": part},
        thresholds={"crack": 0.4},
        score=1.0,
        model="m.safetensors",
    )


def test_metrics_file_round_trips_undefined_is_null_and_absent_values_stay_out(tmp_path):
    summary = _evaluation()
    assert summary.classes["crack"].f1 == 0.0 and summary.classes["crack"].tol_f1 == 1.0  # one px off: tolerated
    summary.write(tmp_path / "eval.json")
    raw = json.loads((tmp_path / "eval.json").read_text())
    assert "tol_f1" not in raw["classes"]["background"]  # absent, not null
    assert read_evaluation(tmp_path / "eval.json") == summary
    nan = summary.model_copy(update={"miou": float("nan")})
    nan.write(tmp_path / "nan.json")
    assert '"miou": null' in (tmp_path / "nan.json").read_text()  # strict JSON
    assert math.isnan(read_evaluation(tmp_path / "nan.json").miou)  # undefined again, not a validation error


def test_the_register_stage_refuses_a_foreign_metrics_file_in_one_line(tmp_path, tiny_model):
    (tmp_path / "eval.json").write_text(json.dumps({"fg_tol_f1": 0.5}))
    result = run_msaf(
        "models",
        "register",
        "--model",
        str(tiny_model),
        "--metrics",
        str(tmp_path / "eval.json"),
        "--decision",
        str(tmp_path / "d.json"),
        cwd=tmp_path,
        env=os.environ | {"MSAF_HOME": str(tmp_path / "home")},
    )
    assert_one_line_error(result, "is not an evaluation summary")
    assert not (tmp_path / "d.json").exists()
