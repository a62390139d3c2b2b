"""A second architecture is a new module plus a name: registered, it trains, saves, loads and
surveys through the same code as DSNet (here a two-layer toy network defined in this module)."""

import numpy as np
import pytest
import torch
from pydantic import Field
from torch import nn

from pipeline.checkpoint import ModelMetadata, load_checkpoint, read_metadata, save_checkpoint
from pipeline.config import ClassSpec, ModelConfig, SurveyConfig
from pipeline.model import FAMILIES, ModelFamily, build_model
from pipeline.model.presets import NetworkConfig
from pipeline.survey import run_survey
from tests.conftest import write_raster


class ToyConfig(NetworkConfig):
    width: int = Field(4, ge=1)
    num_classes: int = Field(2, ge=1)


class ToyNet(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.body = nn.Sequential(nn.Conv2d(3, config.width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(config.width, config.num_classes, 1)

    def forward(self, x: torch.Tensor):
        out = self.head(self.body(x))
        return (out, out, out) if self.training else out


@pytest.fixture
def toy_family(monkeypatch):
    family = ModelFamily("toy", ToyConfig, f"{__name__}:ToyNet", {"toy-small": ToyConfig(width=3)})
    monkeypatch.setitem(FAMILIES, "toy", family)
    return family


def test_a_registered_family_builds_saves_and_loads_like_dsnet(tmp_path, toy_family):
    model = build_model("toy-small", 3, width=5).eval()
    assert isinstance(model, ToyNet) and model.config == ToyConfig(width=5, num_classes=3)
    assert ModelConfig(preset="toy-small").preset == "toy-small"  # params.yaml accepts its presets
    metadata = ModelMetadata(
        preset="toy-small",
        architecture=model.config,
        tile_size=64,
        classes=[ClassSpec(name=n, values=[v]) for n, v in (("background", 0), ("crack", 255), ("joint", 204))],
        mean=(120.0, 120.0, 120.0),
        std=(30.0, 30.0, 30.0),
    )
    save_checkpoint(tmp_path / "toy.safetensors", model, metadata)
    assert read_metadata(tmp_path / "toy.safetensors").architecture == ToyConfig(width=5, num_classes=3)
    loaded, _ = load_checkpoint(tmp_path / "toy.safetensors")
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        assert isinstance(loaded, ToyNet) and torch.equal(loaded(x), model(x))
    ortho = write_raster(tmp_path / "o.tif", np.random.default_rng(0).integers(0, 256, (3, 90, 70), dtype=np.uint8))
    cfg = SurveyConfig(device="cpu", gsd_policy="ignore")
    record = run_survey(ortho, tmp_path / "survey", cfg, model_path=tmp_path / "toy.safetensors")
    assert record.model.preset == "toy-small" and sum(record.class_pixels.values()) == 90 * 70


def test_an_unregistered_preset_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown model preset 'toy-small'; choose one of dsnet"):
        build_model("toy-small", 2)
