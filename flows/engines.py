"""Task runners: `local` (threads, one inference worker owning the GPU) or `dask` (a real cluster)."""

from __future__ import annotations

from typing import Any

import torch


def gpu_count() -> int:
    """CUDA devices torch can use here (0 without CUDA): decides the GPU task resources."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def task_runner(engine: str, dask_address: str | None = None, workers: int | None = None) -> Any:
    """The Prefect task runner for an engine.

    * ``local``: a ThreadPoolTaskRunner with one worker: the engine's own reader pool feeds it.
    * ``dask``: Prefect's DaskTaskRunner on ``dask_address`` (an existing scheduler), else a cluster
      it starts: ``LocalCUDACluster`` (dask-cuda, one worker per GPU) when GPUs exist, otherwise a
      ``LocalCluster`` of worker processes (one thread each: PyTorch already uses every core).
    """
    if engine == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    if engine != "dask":
        raise ValueError(f"unknown engine {engine!r}; use local or dask")
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    gpus = gpu_count()
    if gpus:
        return DaskTaskRunner(cluster_class="dask_cuda.LocalCUDACluster", cluster_kwargs={"resources": {"GPU": 1}})
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": workers or 2, "processes": True, "threads_per_worker": 1},
    )
