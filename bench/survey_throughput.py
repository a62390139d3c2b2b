"""Survey throughput: model-only vs end-to-end `msaf survey` vs a naive tiled baseline.

On the same model and the same generated JPEG-tiled orthomosaic (composed from the real crack
photos), for two raster sizes, each mode in its own process so peak RSS is its own:

* model   - the raster's own tiles (same tile size and overlap), decoded into memory on the device
            before the clock starts, batched; Mpix/s per raster pixel. The ceiling for the
            survey. (Real tiles: a repeated one hid data-dependent costs such as subnormal
            activations. Its peak RSS includes the decoded raster.)
* survey  - the real engine end to end: read + decode, infer, blend, write both COGs, in a fresh
            process (what one `msaf survey` sees: on a GPU that includes creating the CUDA context
            and the first batches' kernel selection). With ``--warm`` the same process then runs
            the survey again (``warm_seconds``: what a Dask worker or the scheduled inbox sees from
            its second orthomosaic on, the model loaded and the device initialised); a 16384²
            raster takes a GPU seconds, so the fixed start-up weighs there as it does not at 100k².
* naive   - what common tools do: read one tile at a time, batch 1, accumulate float64 scores
            for the whole raster in RAM, argmax, write a GeoTIFF.

    python bench/survey_throughput.py                          # CPU: dsnet-tiny, 2048 and 4096 px
    python bench/survey_throughput.py --preset dsnet --sizes 16384 32768 --batch 16   # GPU box
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from childenv import python_path
from machine import machine
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
CFD = REPO / "data" / "sources" / "crackforest"


def make_model(path: Path, preset: str, tile: int) -> None:
    from pipeline.checkpoint import ModelMetadata, save_checkpoint
    from pipeline.config import DataConfig
    from pipeline.model import build_model

    torch.manual_seed(0)
    model = build_model(preset, 2)
    meta = ModelMetadata(
        preset=preset,
        architecture=model.config,
        classes=DataConfig().classes,
        tile_size=tile,
        mean=(120.0, 120.0, 120.0),
        std=(40.0, 40.0, 40.0),
        gsd_m=0.001,
    )
    save_checkpoint(path, model, meta)


def run_model_only(
    ortho: Path,
    model: Path,
    tile: int,
    overlap: int,
    batch: int,
    device: str,
    precision: str = "auto",
    scales: tuple[float, ...] = (1.0,),
) -> dict:
    from pipeline.checkpoint import load_checkpoint
    from pipeline.inference.device import resolve_device, resolve_precision
    from pipeline.inference.runner import TileRunner
    from pipeline.raster.grid import Box, TileGrid

    dev = resolve_device(device)
    net, meta = load_checkpoint(model, dev)
    with rasterio.open(ortho) as ds:
        height, width = ds.height, ds.width
        grid = TileGrid(height, width, tile, overlap)
        pixels = ds.read((1, 2, 3))  # every real tile, decoded before the clock starts
    tiles = grid.tiles_touching(Box(0, 0, height, width))
    bf16 = resolve_precision(precision, dev) == "bf16"
    runner = TileRunner(
        net,
        meta.mean,
        meta.std,
        dev,
        batch,
        grid.tile_shape,
        bf16=bf16,
        scales=scales,
        exposure_floor=meta.exposure_floor,
    )
    # the real tiles (data-dependent costs such as subnormal activations count), uint8 on the device
    on_device = torch.stack(
        [runner._upload(pixels[(slice(None), *t.relative_to(Box(0, 0, height, width)))]) for t in tiles]
    )
    del pixels
    position = 0

    def one_batch() -> None:
        nonlocal position
        group = on_device[position : position + batch]
        runner._inputs[: len(group)].copy_(group)
        runner._probabilities(len(group))
        position += batch

    one_batch()  # warm-up
    position = 0
    if dev.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(0, len(tiles), batch):
        one_batch()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tiles": len(tiles)}


def run_survey_mode(
    ortho: Path,
    model: Path,
    tile: int,
    overlap: int,
    batch: int,
    device: str,
    block: int,
    readers: int,
    precision: str = "auto",
    scales: tuple[float, ...] = (1.0,),
) -> dict:
    from pipeline.config import SurveyConfig
    from pipeline.survey import run_survey

    cfg = SurveyConfig(
        tile=tile,
        overlap=overlap,
        batch=batch,
        device=device,
        block=block,
        readers=readers,
        gsd_policy="ignore",
        precision=precision,
        scales=scales,
    )
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        record = run_survey(ortho, out, cfg, model_path=model)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "stages": record.timings.model_dump()}


def run_naive(ortho: Path, model: Path, tile: int, overlap: int, device: str) -> dict:
    """One tile at a time, batch 1, whole-raster float64 score accumulator: the common approach."""
    from pipeline.checkpoint import load_checkpoint
    from pipeline.inference.device import resolve_device
    from pipeline.inference.predict import normalise
    from pipeline.raster.grid import Box, TileGrid

    dev = resolve_device(device)
    net, meta = load_checkpoint(model, dev)
    started = time.perf_counter()
    with rasterio.open(ortho) as ds, tempfile.TemporaryDirectory() as out:
        grid = TileGrid(ds.height, ds.width, tile, overlap)
        scores = np.zeros((len(meta.classes), ds.height, ds.width), np.float64)
        for t in grid.tiles_touching(Box(0, 0, ds.height, ds.width)):
            pixels = ds.read((1, 2, 3), window=t.window).transpose(1, 2, 0)
            with torch.inference_mode():
                logits = net(
                    normalise(torch.from_numpy(pixels[None].copy()).to(dev), meta.mean, meta.std, meta.exposure_floor)
                )
            scores[:, t.row0 : t.row1, t.col0 : t.col1] += logits.softmax(1)[0].double().cpu().numpy()
        mask = scores.argmax(0).astype(np.uint8)
        profile = ds.profile | {"count": 1, "dtype": "uint8", "compress": "deflate", "photometric": "minisblack"}
        with rasterio.open(Path(out) / "mask.tif", "w", **profile) as dst:
            dst.write(mask, 1)
    return {"seconds": time.perf_counter() - started}


def _rates(mpix: float, result: dict) -> dict[str, float]:
    """Mpix/s of a mode's run, and of its warm run where it has one."""
    rates = {"mpix_s": mpix / result["seconds"]}
    if "warm_seconds" in result:
        rates["warm_mpix_s"] = mpix / result["warm_seconds"]
    return rates


def child(args: argparse.Namespace) -> None:
    """Run one mode in this process and print a JSON line."""
    from pipeline.inference.scales import parse_scales

    ortho, model, scales = Path(args.ortho), Path(args.model), parse_scales(args.scales)
    if args.mode == "model":
        result = run_model_only(ortho, model, args.tile, args.overlap, args.batch, args.device, args.precision, scales)
    elif args.mode == "survey":
        settings = (args.tile, args.overlap, args.batch, args.device, args.block, args.readers, args.precision, scales)
        result = run_survey_mode(ortho, model, *settings)
        if args.warm:
            again = run_survey_mode(ortho, model, *settings)
            result |= {"warm_seconds": again["seconds"], "warm_stages": again["stages"]}
    else:
        result = run_naive(ortho, model, args.tile, args.overlap, args.device)
    from pipeline.survey import peak_rss_mb

    print(json.dumps(result | {"peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="dsnet-tiny")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--block", type=int, default=4096)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="the network's arithmetic (survey.precision)",
    )
    parser.add_argument("--readers", type=int, default=4, help="survey reader threads")
    parser.add_argument("--scales", default="1", help="views averaged per tile (survey.scales), e.g. 1,2")
    parser.add_argument("--modes", nargs="+", default=["model", "survey", "naive"])
    parser.add_argument("--warm", action="store_true", help="survey mode: run the survey a second time in its process")
    parser.add_argument("--workdir", default=None, help="keep generated rasters here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (every mode of every size)")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--ortho", help=argparse.SUPPRESS)
    parser.add_argument(
        "--model",
        help="a trained checkpoint (its classes and decision thresholds) instead of random weights of --preset",
    )
    args = parser.parse_args()
    if args.mode:
        child(args)
        return

    from pipeline.config import DataConfig
    from pipeline.data.mosaic import compose_mosaic

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="msaf-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.model:
        model = Path(args.model).resolve()
        from pipeline.checkpoint import read_metadata

        args.preset = read_metadata(model).preset
    else:
        model = workdir / f"{args.preset}.safetensors"
        make_model(model, args.preset, args.tile)
    table = Table(
        title=f"survey throughput: {args.preset}, tile {args.tile}, overlap {args.overlap}, "
        f"batch {args.batch}, device {args.device}, precision {args.precision}, views {args.scales}, "
        f"torch {torch.__version__}"
    )
    for column in ("raster", "mode", "seconds", "Mpix/s", "vs model-only", "vs naive", "peak RSS MiB"):
        table.add_column(column)
    measured: dict[str, dict] = {}
    for size in args.sizes:
        ortho = workdir / f"ortho_{size}.tif"
        if not ortho.exists():
            compose_mosaic(
                CFD / "images",
                CFD / "masks",
                ortho,
                workdir / f"truth_{size}.tif",
                size,
                size,
                0.001,
                "EPSG:32633",
                DataConfig().classes,
                compress="jpeg",
                footprint=False,
                seed=size,
            )
        results = {}
        for mode in args.modes:
            command = [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--ortho",
                str(ortho),
                "--model",
                str(model),
                "--tile",
                str(args.tile),
                "--overlap",
                str(args.overlap),
                "--batch",
                str(args.batch),
                "--block",
                str(args.block),
                "--device",
                args.device,
                "--readers",
                str(args.readers),
                "--precision",
                args.precision,
                "--scales",
                args.scales,
                *(["--warm"] if args.warm else []),
            ]
            # this checkout's pipeline in the child (a worktree's bench measures its own code, not the
            # editable install's), the PYTHONPATH entries already there kept (a GPU host's wheels)
            env = {**os.environ, "PYTHONPATH": python_path(REPO)}
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"{mode} at {size}² failed:\n{done.stderr[-4000:]}")
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{size}² {mode}: {json.dumps(results[mode])}", flush=True)  # partial results survive a timeout
        mpix = size * size / 1e6
        measured[str(size)] = {mode: r | _rates(mpix, r) for mode, r in results.items()}
        rows = [(mode, result["seconds"], result) for mode, result in results.items()]
        if "warm_seconds" in results.get("survey", {}):
            rows.insert(list(results).index("survey") + 1, ("survey, warm", results["survey"]["warm_seconds"], {}))
        for mode, seconds, result in rows:
            rate = mpix / seconds
            vs_model = f"{rate / (mpix / results['model']['seconds']):.2f}x" if "model" in results else ""
            vs_naive = f"{rate / (mpix / results['naive']['seconds']):.2f}x" if "naive" in results else ""
            peak = f"{result['peak_rss_mb']:.0f}" if result else "(same process)"
            table.add_row(f"{size}x{size}", mode, f"{seconds:.2f}", f"{rate:.2f}", vs_model, vs_naive, peak)
    Console(width=150).print(table)
    if args.out:
        meta = {
            "preset": args.preset,
            "device": args.device,
            "batch": args.batch,
            "tile": args.tile,
            "scales": args.scales,
            "torch": torch.__version__,
            "machine": machine(),
        }
        args.out.write_text(json.dumps(meta | {"sizes": measured}, indent=1))


if __name__ == "__main__":
    main()
