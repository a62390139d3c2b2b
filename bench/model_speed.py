"""Forward throughput (Mpix/s) of each model preset, on CPU and, when present, CUDA.

CUDA rows: fp32, bf16 autocast, bf16 + channels_last, bf16 + channels_last + torch.compile.
Ratios are against the fp32 row of the same preset measured in the same run.

    python bench/model_speed.py                       # CPU: 512 px tiles, batch 2
    python bench/model_speed.py --tile 1024 --batch 16  # the reference GPU setting
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from pipeline.model import PRESETS, build_model, count_parameters


def _time(step: Callable[[], object], sync: Callable[[], None], seconds: float, warmup: int) -> float:
    for _ in range(warmup):
        step()
    sync()
    runs, started = 0, time.perf_counter()
    while runs < 2 or time.perf_counter() - started < seconds:
        step()
        runs += 1
    sync()
    return (time.perf_counter() - started) / runs


def measure(preset: str, device: torch.device, mode: str, tile: int, batch: int, seconds: float) -> float:
    """Mpix/s of one inference configuration."""
    model = build_model(preset, 2).eval().to(device)
    x = torch.randn(batch, 3, tile, tile, device=device)
    if "channels_last" in mode:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if "compile" in mode else model
    use_bf16 = "bf16" in mode

    @torch.inference_mode()
    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            forward(x)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warmup = 3 if "compile" in mode else 1
    return batch * tile * tile / _time(step, sync, seconds, warmup) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--tile", type=int, default=None, help="tile side (default 512 CPU, 1024 CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="batch (default 2 CPU, 16 CUDA)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()

    rows = [("cpu", "fp32"), ("cpu", "fp32+channels_last")]
    if torch.cuda.is_available():
        rows += [("cuda", m) for m in ("fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile")]
    table = Table(title=f"forward throughput, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for column in ("preset", "params (M)", "device", "mode", "tile x batch", "Mpix/s", "vs fp32"):
        table.add_column(column)
    for preset in args.presets:
        params_m = count_parameters(build_model(preset, 2), include_aux=False) / 1e6
        baseline: dict[str, float] = {}
        for device_name, mode in rows:
            device = torch.device(device_name)
            tile = args.tile or (1024 if device.type == "cuda" else 512)
            batch = args.batch or (16 if device.type == "cuda" else 2)
            mpix = measure(preset, device, mode, tile, batch, args.seconds)
            baseline.setdefault(device_name, mpix)
            table.add_row(
                preset,
                f"{params_m:.2f}",
                device_name,
                mode,
                f"{tile}x{batch}",
                f"{mpix:.2f}",
                f"{mpix / baseline[device_name]:.2f}x",
            )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
