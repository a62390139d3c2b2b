"""params.yaml is typed and validated; mistakes name the file and the key."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import load_params
from pipeline.errors import MsafError

REPO = Path(__file__).resolve().parents[1]


def test_project_params_validate_and_paths_resolve():
    params = load_params(REPO / "params.yaml")
    sets = {s.name: s for s in params.data.datasets}
    assert list(sets) == ["crackforest", "uav75", "masonry"]
    for name in sets:  # DVC-tracked raw data, one folder per set
        assert sets[name].images == REPO / "data" / "raw" / name / "images"
        assert sets[name].masks == REPO / "data" / "raw" / name / "masks"
    assert params.data.class_names == ["background", "crack", "joint"]
    assert sets["crackforest"].values == {0: "background", 255: "crack"}  # CFD labels no joints
    assert sets["uav75"].values == {0: "background", 204: "joint", 255: "crack"}
    assert sets["uav75"].split == "by_photo" and sets["crackforest"].split == "random"
    assert sets["masonry"].values == {0: "background", 255: "crack"}  # mortar joints unlabelled: partial label
    assert sets["masonry"].split == "by_photo"
    assert params.train.init == str(REPO / "models" / "checkpoints" / "finetune-4.safetensors")  # resolved path
    assert params.train.calibrate == ["crack"]
    assert params.report.split_classes(params.data.class_names) == (["crack"], ["joint"])
    assert params.train.loss.aux_weights == (0.2, 0.2) and params.train.loss.main_weight == 0.6


def test_single_folder_params_are_one_data_set(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data: {images: a/images, masks: a/masks, val_fraction: 0.3}\n")
    (only,) = load_params(path).data.datasets
    assert only.name == "data" and only.images == tmp_path / "a" / "images" and only.val_fraction == 0.3
    assert only.values == {0: "background", 255: "crack"} and only.split == "random"


def _write(tmp_path: Path, payload: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"learning_rate": 0.1}}, "train.learning_rate"),
        ({"model": {"preset": "dsnet-xl"}}, "model.preset"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction"),
        (
            {"data": {"sets": [{"name": "a", "images": "i", "masks": "m", "values": {0: "background", 9: "rust"}}]}},
            "data",
        ),
        ({"data": {"sets": [{"name": "a", "images": "i", "masks": "m", "photo_pattern": "^DSC"}]}}, "data.sets.0"),
        ({"data": {"sets": [{"name": "a", "images": "i", "masks": "m", "split": "by_stem"}]}}, "data.sets.0.split"),
        ({"train": {"calibrate": ["rust"]}}, "(top level)"),
    ],
)
def test_invalid_value_or_key_names_the_key(tmp_path, payload, key):
    path = _write(tmp_path, payload)
    with pytest.raises(MsafError) as info:
        load_params(path)
    message = str(info.value)
    assert str(path) in message and f"'{key}'" in message and "\n" not in message


def test_a_mask_value_mapped_to_two_classes_is_refused(tmp_path):
    path = _write(tmp_path, {"data": {"classes": [{"name": "bg", "values": [0]}, {"name": "crack", "values": [0]}]}})
    with pytest.raises(MsafError, match="mapped twice"):
        load_params(path)


def test_missing_file_and_overrides(tmp_path):
    with pytest.raises(MsafError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    params = load_params(_write(tmp_path, {}), {"train.epochs": 3, "model.preset": "dsnet-tiny"})
    assert params.train.epochs == 3 and params.model.preset == "dsnet-tiny"


def test_the_cpu_finetune_preset_starts_from_the_champion_and_keeps_the_photo_sets(tmp_path):
    import yaml

    from pipeline.config import FINETUNE_CPU, finetune_preset, load_params

    (tmp_path / "site").mkdir()
    sets = [
        {"name": "crackforest", "images": "i", "masks": "m"},
        {"name": "deck", "kind": "geo", "labelset": "site"},
    ]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"sets": sets}}))
    base = load_params(tmp_path / "params.yaml")
    preset = finetune_preset(base)
    assert preset["train.distill.sets"] == ["crackforest"] and preset["train.distill.weight"] == 1.0
    tuned = load_params(tmp_path / "params.yaml", preset | {"train.epochs": 1})  # --set wins over the preset
    assert tuned.train.init == "champion" and tuned.train.epochs == 1 and tuned.train.steps_per_epoch == 100
    assert tuned.train.distill.teacher == "init" and tuned.train.lr == FINETUNE_CPU["train.lr"]
    (tmp_path / "geo.yaml").write_text(yaml.safe_dump({"data": {"sets": sets[1:]}}))
    assert finetune_preset(load_params(tmp_path / "geo.yaml"))["train.distill.weight"] == 0.0  # nothing to keep


def test_a_checkpoint_records_the_training_sections_only_so_survey_settings_never_change_its_bytes():
    params = load_params(REPO / "params.yaml")
    recorded = params.recorded()
    assert set(recorded) == {"data", "model", "train", "evaluate"} == params.TRAINING_SECTIONS
    assert recorded["train"]["init"] == "models/checkpoints/finetune-4.safetensors"  # relative to the project
    assert recorded["train"]["precision"] == "auto"
    other = load_params(REPO / "params.yaml", {"survey": {"precision": "bf16", "block": 1024}, "report": {}})
    assert other.survey.precision == "bf16" and other.recorded() == recorded


def test_an_invalid_survey_flag_is_named_as_it_is_typed():
    """Command-line overrides are typed with hyphens; the one-line error names them that way."""
    from pipeline.config import load_params_or_defaults

    with pytest.raises(MsafError, match=r"^invalid option --gdal-cache-mb: Input should be greater than or equal"):
        load_params_or_defaults(None, {"gdal_cache_mb": 1})
    with pytest.raises(MsafError, match=r"^invalid option --overlap: Input should be greater than or equal to 0"):
        load_params_or_defaults(None, {"overlap": -1})
