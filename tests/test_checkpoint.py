"""Checkpoints round-trip exactly and never unpickle."""

import pickle

import pytest
import torch

from pipeline.checkpoint import ModelMetadata, load_checkpoint, read_metadata, save_checkpoint
from pipeline.config import ClassSpec
from pipeline.errors import MsafError
from pipeline.model import build_model


def _metadata(model) -> ModelMetadata:
    return ModelMetadata(
        preset="dsnet-tiny",
        architecture=model.config,
        tile_size=256,
        classes=[ClassSpec(name="background", values=[0]), ClassSpec(name="crack", values=[255])],
        mean=(120.0, 118.5, 110.2),
        std=(30.0, 31.0, 29.5),
        gsd_m=0.001,
        metrics={"val": {"fg_tol_f1": 0.5}},
        data_fingerprint="abc",
    )


def _trained_like(model):
    """Perturb weights and BN statistics so a round trip is not trivially the init."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(torch.rand(tensor.shape, generator=gen) * 0.1)
    return model


def test_round_trip_gives_identical_outputs_and_metadata(tmp_path):
    model = _trained_like(build_model("dsnet-tiny", 2)).eval()
    path = tmp_path / "m.safetensors"
    sha = save_checkpoint(path, model, _metadata(model))
    loaded, meta = load_checkpoint(path)
    assert len(sha) == 64 and not loaded.training
    assert meta.architecture == model.config and meta.mean == (120.0, 118.5, 110.2) and meta.tile_size == 256
    assert meta.class_names == ["background", "crack"] and meta.gsd_m == 0.001
    x = torch.randn(1, 3, 64, 80)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert read_metadata(path).data_fingerprint == "abc"
    assert not list(tmp_path.glob(".*partial*"))


def test_half_precision_file_is_smaller_and_close(tmp_path):
    torch.manual_seed(0)  # unseeded, about one random init in four overflows fp16 (outputs ~1e22)
    model = _trained_like(build_model("dsnet-tiny", 2)).eval()
    save_checkpoint(tmp_path / "full.safetensors", model, _metadata(model))
    save_checkpoint(tmp_path / "half.safetensors", model, _metadata(model), half=True)
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * (tmp_path / "full.safetensors").stat().st_size
    loaded, _ = load_checkpoint(tmp_path / "half.safetensors")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=0.05, atol=0.05)


def test_pickles_and_garbage_are_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(MsafError, match="not an msaf model checkpoint"):
        load_checkpoint(evil)
    torch.save(build_model("dsnet-tiny", 2).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(MsafError, match="not an msaf model checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(MsafError, match="model file not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    model = build_model("dsnet-tiny", 2)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, _metadata(model))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MsafError, match=r"corrupt model weights|not an msaf model"):
        load_checkpoint(path)


NONSENSE = {
    "threshold_above_1": (
        {"thresholds": {"crack": 5.0}},
        "the crack threshold must be a probability in (0, 1), got 5.0",
    ),
    "threshold_negative": ({"thresholds": {"crack": -1}}, "the crack threshold must be a probability in (0, 1)"),
    "threshold_unknown_class": ({"thresholds": {"spall": 0.5}}, "a threshold for 'spall'"),
    "nan_mean": ({"mean": [float("nan"), 1.0, 1.0]}, "the input mean must be finite"),
    "zero_std": ({"std": [30.0, 0.0, 29.5]}, "the input std must be finite and above 0"),
    "duplicate_class": (
        {"classes": [{"name": "crack", "values": [0]}, {"name": "crack", "values": [255]}]},
        "class names must be unique, 'crack' is listed twice",
    ),
    "fewer_classes_than_outputs": (
        {"classes": [{"name": "background", "values": [0]}]},
        "1 class names for a network with 2 outputs",
    ),
}


@pytest.mark.parametrize("case", list(NONSENSE))
def test_model_metadata_that_makes_no_sense_is_one_line_on_load(tmp_path, case):
    """Each would survey with exit 0 and a wrong answer (or fail after the whole inference)."""
    import json

    from safetensors.torch import load_file, save_file

    from pipeline.checkpoint import METADATA_KEY

    changes, expected = NONSENSE[case]
    model = build_model("dsnet-tiny", 2)
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, model, _metadata(model))
    raw = json.loads(_metadata(model).model_dump_json()) | changes
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(bad), metadata={METADATA_KEY: json.dumps(raw)})
    with pytest.raises(MsafError) as caught:
        read_metadata(bad)
    message = str(caught.value)
    assert expected in message and "\n" not in message, message
    assert read_metadata(good).class_names == ["background", "crack"]
