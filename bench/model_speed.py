"""Forward throughput (Mpix/s) of each model preset or a checkpoint, on CPU and, when present, CUDA.

CPU rows: fp32, fp32 + channels_last, and bf16 autocast + channels_last where the CPU has native
bf16 (AVX512_BF16 or AMX: `survey.precision: bf16`). CUDA rows: fp32, bf16 autocast,
bf16 + channels_last, bf16 + channels_last + torch.compile.
Ratios are against the fp32 row of the same network measured in the same run. Every row runs the
network as surveys do, its batch norms folded into the convolutions (`pipeline/inference/fold.py`). Each row also says
how much arithmetic that rate is (the network's multiply-adds per pixel, counted by torch's
FlopCounterMode on one tile, times the rate) and, on a GPU whose dense bf16 peak is known, which
share of that peak it reaches: how far the network is from the chip's limit.

    python bench/model_speed.py                       # CPU: 512 px tiles, batch 2
    python bench/model_speed.py --tile 1024 --batch 16  # the reference GPU setting
    python bench/model_speed.py --model pipeline/assets/msaf-dsnet.safetensors --out speed.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from pipeline.checkpoint import load_checkpoint
from pipeline.inference.device import cpu_has_native_bf16
from pipeline.inference.fold import fold_batch_norms
from pipeline.model import PRESETS, build_model, count_parameters

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets; the first
# name found in torch.cuda.get_device_name() wins, so the more specific names come first.
BF16_PEAK_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def bf16_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU from its name, or None when this table does not know it."""
    for name, peak in BF16_PEAK_TFLOPS.items():
        if name in device_name:
            return peak
    return None


def flops_per_pixel(model: torch.nn.Module, tile: int) -> float:
    """FLOPs (2 per multiply-add) of one forward pass per input pixel, counted on one CPU tile of fp32."""
    model = model.to("cpu").eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, tile, tile))
    return counter.get_total_flops() / (tile * tile)


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


def measure(model: torch.nn.Module, device: torch.device, mode: str, tile: int, batch: int, seconds: float) -> float:
    """Mpix/s of one inference configuration, the network as surveys run it (batch norms folded)."""
    model = fold_batch_norms(model).to(device)
    x = torch.randn(batch, 3, tile, tile, device=device)
    memory_format = torch.channels_last if "channels_last" in mode else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # type: ignore[call-overload]
    x = x.contiguous(memory_format=memory_format)
    forward = torch.compile(model) if "compile" in mode else model
    use_bf16 = "bf16" in mode

    @torch.inference_mode()
    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            forward(x)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warmup = 3 if "compile" in mode else 1
    return batch * tile * tile / _time(step, sync, seconds, warmup) / 1e6


def networks(presets: list[str], checkpoint: Path | None) -> dict[str, torch.nn.Module]:
    """Name -> each network to time (a checkpoint's trained weights, or random presets); every row
    times its own folded copy (``measure``), so one instance serves them all."""
    if checkpoint is not None:
        return {checkpoint.name: load_checkpoint(checkpoint)[0]}
    return {preset: build_model(preset, 2) for preset in presets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--model", type=Path, default=None, help="a checkpoint to time instead of the presets")
    parser.add_argument("--tile", type=int, default=None, help="tile side (default 512 CPU, 1024 CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="batch (default 2 CPU, 16 CUDA)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--cuda-only", action="store_true", help="skip the CPU rows (a GPU session's time is short)")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = parser.parse_args()

    rows = [] if args.cuda_only else [("cpu", "fp32"), ("cpu", "fp32+channels_last")]
    if not args.cuda_only and cpu_has_native_bf16():
        rows.append(("cpu", "bf16+channels_last"))
    gpu_name, peak = None, None
    if torch.cuda.is_available():
        rows += [("cuda", m) for m in ("fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile")]
        gpu_name = torch.cuda.get_device_name()
        peak = bf16_peak_tflops(gpu_name)
    title = f"forward throughput, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    table = Table(title=title + (f", {gpu_name} (bf16 peak {peak} TFLOP/s)" if gpu_name else ""))
    for column in ("network", "params (M)", "GFLOP/Mpix", "device", "mode", "tile x batch", "Mpix/s", "vs fp32",
                   "TFLOP/s", "bf16 peak"):  # fmt: skip
        table.add_column(column)
    results = []
    for name, network in networks(args.presets, args.model).items():
        params_m = count_parameters(network, include_aux=False) / 1e6
        baseline: dict[str, float] = {}
        gflop_at: dict[int, float] = {}  # per tile side: counting runs a forward on the CPU
        for device_name, mode in rows:
            device = torch.device(device_name)
            tile = args.tile or (1024 if device.type == "cuda" else 512)
            batch = args.batch or (16 if device.type == "cuda" else 2)
            if tile not in gflop_at:
                gflop_at[tile] = flops_per_pixel(network, tile) / 1e3
            gflop_per_mpix = gflop_at[tile]
            mpix = measure(network, device, mode, tile, batch, args.seconds)
            baseline.setdefault(device_name, mpix)
            tflops = mpix * gflop_per_mpix / 1e3  # Mpix/s x GFLOP/Mpix = GFLOP/s
            share = tflops / peak if peak and device.type == "cuda" else None
            results.append({
                "network": name, "device": device_name, "gpu": gpu_name if device.type == "cuda" else None,
                "mode": mode, "tile": tile, "batch": batch, "mpix_s": mpix, "gflop_per_mpix": gflop_per_mpix,
                "tflop_s": tflops, "bf16_peak_share": share,
            })  # fmt: skip
            table.add_row(
                name, f"{params_m:.2f}", f"{gflop_per_mpix:.1f}", device_name, mode, f"{tile}x{batch}",
                f"{mpix:.2f}", f"{mpix / baseline[device_name]:.2f}x", f"{tflops:.3g}",
                f"{share:.1%}" if share is not None else "",
            )  # fmt: skip
    Console(width=160).print(table)
    if args.out:
        from machine import machine  # beside this script (the tests load this file as a module)

        payload = {"torch": torch.__version__, "machine": machine(), "rows": results}
        args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
