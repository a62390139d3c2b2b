"""Where msaf finds its settings, model and tracking store, and where it may write.

Precedence (the README documents it; `msaf doctor` prints the answer):

* project folder: ``MSAF_PROJECT_DIR``, else the nearest folder at or above the working directory
  holding both ``params.yaml`` and ``dvc.yaml`` (the repository checkout, or a copy of it);
* settings: ``--params FILE``, else ``MSAF_PARAMS``, else the project's ``params.yaml``, else the
  built-in defaults (the same values as the repository's params.yaml);
* tracking store and caches: ``MLFLOW_TRACKING_URI`` for the store, else the project folder, else
  the per-user data folder (``MSAF_HOME``, else platformdirs' user data folder). Never the working
  directory of a user who is not in a project: a survey from any folder leaves only its --out;
* the shipped model is package data, so an installed `msaf` has it wherever it runs.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SHIPPED_MODEL_NAME = "msaf-dsnet.safetensors"


def project_dir(start: Path | None = None) -> Path | None:
    """The msaf project folder the command runs in, if any (see the module docstring)."""
    if explicit := os.environ.get("MSAF_PROJECT_DIR"):
        return Path(explicit).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    return None


def user_home() -> Path:
    """Per-user data folder: ``MSAF_HOME``, else platformdirs' (e.g. ~/.local/share/msaf-pipeline)."""
    if explicit := os.environ.get("MSAF_HOME"):
        return Path(explicit).expanduser().resolve()
    from platformdirs import user_data_path

    return user_data_path("msaf-pipeline", appauthor=False)


def state_root() -> Path:
    """Where the tracking store, artifacts and caches live: the project folder, else the user's."""
    return project_dir() or user_home()


def params_path(explicit: Path | None) -> tuple[Path | None, str]:
    """The settings file to read (None: built-in defaults) and where that choice came from."""
    if explicit is not None:
        return explicit, "--params"
    if env := os.environ.get("MSAF_PARAMS"):
        return Path(env), "MSAF_PARAMS"
    if (project := project_dir()) is not None:
        return project / "params.yaml", "project folder"
    return None, "built-in defaults"


def shipped_model() -> Path:
    """The default model installed with the package (a safetensors file; never unpickled)."""
    return Path(str(resources.files("pipeline.assets").joinpath(SHIPPED_MODEL_NAME)))
