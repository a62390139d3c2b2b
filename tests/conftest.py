"""Shared fixtures: real files on disk (CFD photos, generated image/mask folders), never mocks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CFD = SHARED / "data" / "crackforest"


@pytest.fixture(scope="session")
def cfd_dir() -> Path:
    """The real CrackForest photos shared with the project."""
    assert (CFD / "images").is_dir(), f"shared crack data missing at {CFD}"
    return CFD


@pytest.fixture
def cfd_subset(tmp_path: Path, cfd_dir: Path) -> Path:
    """A copy of the first 10 real CFD image/mask pairs (tests may damage it)."""
    out = tmp_path / "cfd"
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True)
    for image in sorted((cfd_dir / "images").glob("*.jpg"))[:10]:
        shutil.copy(image, out / "images" / image.name)
        shutil.copy(cfd_dir / "masks" / f"{image.stem}.png", out / "masks" / f"{image.stem}.png")
    return out


def write_pair(root: Path, stem: str, image: np.ndarray, mask: np.ndarray) -> None:
    """Write an RGB PNG image and an 8-bit PNG mask under root/images and root/masks."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


def write_params(path: Path, images: Path, masks: Path, **sections: dict) -> Path:
    """A params.yaml for a quick dsnet-tiny run on the given folders."""
    import yaml

    params = {
        "data": {"images": str(images), "masks": str(masks), "val_fraction": 0.3},
        "model": {"preset": "dsnet-tiny"},
        "train": {"out": str(path.parent / "model.safetensors"), "epochs": 1, "steps_per_epoch": 2,
                  "batch_size": 2, "crop_size": 64, "device": "cpu"},
    }
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(params))
    return path
