"""`msaf doctor`: versions, devices, and which settings, stores and model are used, from where."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

import pipeline

if TYPE_CHECKING:
    pass

from flows.cli.app import (
    console,
)


def doctor() -> None:
    """Print versions, devices and which settings, model and stores are used (and why), for bug reports."""
    import importlib.util

    import numpy
    import pyogrio
    import rasterio
    import torch

    from pipeline.inference.device import cpu_has_native_bf16
    from pipeline.locations import params_path, project_dir, shipped_model, state_root, user_home
    from pipeline.tracking.store import tracking_uri

    rows = {
        "msaf-pipeline": pipeline.__version__,
        "python": platform.python_version(),
        "torch": f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})",
        "cpu threads": str(torch.get_num_threads()),
        "cpu bf16": (
            "native (survey.precision: bf16 runs the network ~2x faster on a CPU)"
            if cpu_has_native_bf16()
            else "not native (CPU surveys stay fp32)"
        ),
        "numpy": numpy.__version__,
        "rasterio / GDAL": f"{rasterio.__version__} / {rasterio.__gdal_version__} (rasters)",
        # a second copy of GDAL, in pyogrio's wheel: GeoPackages and other vector files
        "pyogrio / GDAL": f"{pyogrio.__version__} / {pyogrio.__gdal_version_string__} (vector files)",
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            bf16 = "yes" if torch.cuda.is_bf16_supported() else "no"
            rows[f"cuda:{index}"] = (
                f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute {props.major}.{props.minor}, bf16 {bf16}"
            )
    else:
        rows["cuda"] = "not available (surveys run on the CPU)"
    rows["dask-cuda"] = (
        "installed (one Dask worker per GPU)"
        if importlib.util.find_spec("dask_cuda")
        else "not installed (pip install -e .[gpu] for --engine dask on GPUs)"
    )
    path, source = params_path(None)
    rows["params"] = f"{path} ({source})" if path else "built-in defaults (no project folder, no MSAF_PARAMS)"
    project = project_dir()
    rows["project folder"] = str(project) if project else "none (not inside a folder with params.yaml + dvc.yaml)"
    rows["user data"] = f"{user_home()} (MSAF_HOME)" if os.environ.get("MSAF_HOME") else str(user_home())
    rows["tracking store"] = tracking_uri() + (
        " (MLFLOW_TRACKING_URI)"
        if os.environ.get("MLFLOW_TRACKING_URI")
        else f" ({'project folder' if project else 'user data'})"
    )
    rows["artifacts"] = str(state_root() / "mlartifacts")
    shipped = shipped_model()
    rows["default model"] = f"the registry's champion; the first one is the shipped model {shipped}" + (
        "" if shipped.is_file() else " (MISSING: reinstall msaf-pipeline)"
    )
    api = os.environ.get("PREFECT_API_URL")
    rows["prefect api"] = api or "a temporary server per survey (bound to it; set PREFECT_API_URL to use yours)"
    for key, value in rows.items():
        console.print(f"{key:>16}: {value}", highlight=False, markup=False)
