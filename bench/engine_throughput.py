"""Engine-only throughput: the real survey engine with a null network, so what is left is the engine.

Would a GPU box be fed? The network is replaced by a 1x1 convolution with the shipped model's
classes (negligible compute, same input and output shapes), everything else is the real `msaf
survey` engine: JPEG decoding by the reader threads, nodata fill, upload, blending, the calibrated
decision, the block store, both COGs with overviews. Each core count runs in its own process
pinned to that many cores (`taskset`), with that many torch threads. The rate comes from runs with
no instrumentation; one more run per core count times each stage twice, both summed over the
threads it runs on: wall seconds (stages overlap and wait for a core, so the sum can exceed the wall
time) and CPU seconds (each thread's own clock: what the stage costs the cores). Timing every stage
costs the run itself: ~8,300 timed sections per 16384² survey (two clock reads, a lock and a
wrapped call each, Python that holds the GIL between the stages' GIL-free work) made two cores
2-16 % slower in alternating runs (one core 0-3 %), so the profiled run's rate is shown, not used.
"Host-side" adds up the CPU seconds of the stages a GPU host keeps on its CPU cores (the rest runs
on the device there): the rate one host core sustains, so a GPU box needs its network's rate over
that many cores.

    python bench/engine_throughput.py --size 4096 --cores 1 2 --out metrics/engine_throughput.json
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch
from childenv import python_path
from machine import core_scaling, machine
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
CFD = REPO / "data" / "sources" / "crackforest"
SHIPPED = REPO / "pipeline" / "assets" / "msaf-dsnet.safetensors"


class NullNetwork(torch.nn.Module):
    """Logits of the right shape for negligible compute: a fixed 1x1 convolution of the input.

    ``shaped`` (the default) answers like the shipped model does on a survey, so the encoders see
    output of the same kind: dark pixels are crack (and the darkest joint), the rest confident
    background. On a 2048² crop of this bench's mosaic the shipped model's mask is 97.6 % background,
    2.3 % crack, 0.1 % joint, its confidence 70 % at 255 (zlib level 1: ratio 59 and 4.6); this net
    gives 97.7 / 2.2 / 0.1 %, ~70 % at 255, ratios 23 and ~3 (speckle compresses worse than lines).
    ``noisy`` is a random mix of the colours: 87 % crack, an incompressible confidence layer, the
    encoders' worst case (zlib ratios 7.5 and 1.2).
    """

    # thresholds on the standardised mean of the three channels (2.3 % and 0.1 % quantiles of CFD)
    SLOPE, CRACK_BELOW, JOINT_BELOW = 7.5, -1.75, -2.355

    def __init__(self, classes: int, kind: str = "shaped") -> None:
        super().__init__()
        self.mix = torch.nn.Conv2d(3, classes, 1)
        self._logits: torch.Tensor | None = None
        if kind == "noisy":
            torch.nn.init.normal_(self.mix.weight, generator=torch.Generator().manual_seed(0))
            return
        with torch.no_grad():  # logit(class) - logit(background) = -k slope (mean - below), k = 1 crack, 2 joint
            bias = self.mix.bias
            assert bias is not None  # a Conv2d made with its bias
            self.mix.weight.zero_()
            bias.zero_()
            for cls, (k, below) in enumerate([(1, self.CRACK_BELOW), (2, self.JOINT_BELOW)][: classes - 1], start=1):
                self.mix.weight[cls] = -k * self.SLOPE / 3
                bias[cls] = k * self.SLOPE * below

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """The 1x1 convolution as one batched matrix product into logits this network keeps (valid
        until the next call; the runner takes its softmax first). A GPU's caching allocator hands a
        network the same device memory batch after batch; a CPU's fresh 6 MB of logits (and torch's
        im2col copy of the input for a plain-layout convolution) faulted pages in every batch, which
        at two cores, from the inference threads' malloc arenas, cost the engine ~1 s of kernel time
        per 16384² survey that a GPU host never pays. Bit for bit the convolution's logits."""
        batch, channels, height, width = image.shape
        classes, bias = self.mix.out_channels, self.mix.bias
        assert bias is not None  # made with its bias
        if self._logits is None or self._logits.shape != (batch, classes, height, width):
            self._logits = torch.empty((batch, classes, height, width))
        torch.baddbmm(
            bias.view(1, classes, 1).expand(batch, classes, height * width),
            self.mix.weight.reshape(1, classes, channels).expand(batch, classes, channels),
            image.reshape(batch, channels, height * width),
            out=self._logits.view(batch, classes, height * width),
        )
        return self._logits


# What stays on the CPU cores of a GPU host: decoding, the footprint fill (scipy's distance
# transform), the block store (saving each block; the stitch loads back only blocks other processes
# inferred) and the COGs. Standardising, the network, softmax, blending and the decision run on the
# device there, so the cores a GPU box needs are its rate over these stages' rate.
HOST_STAGES = (
    "read + decode",
    "nodata fill",
    "block store",
    "block load (stitch)",
    "block write (tiles compressed)",
    "tile DEFLATE (its pool)",
    "COG layout",
)

STAGES: dict[str, float] = defaultdict(float)  # wall seconds, summed over the threads in the stage
CPU: dict[str, float] = defaultdict(float)  # CPU seconds of those threads in the stage (waits excluded)
_LOCK = threading.Lock()


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def _add(stage: str, started: tuple[float, float]) -> None:
    wall, cpu = _clocks()
    with _LOCK:
        STAGES[stage] += wall - started[0]
        CPU[stage] += cpu - started[1]


def _timed_steps(stage: str, steps: Iterator) -> Iterator:
    """A generator's items, the time spent producing each added up under ``stage``."""
    while True:
        started = _clocks()
        try:
            item = next(steps)
        except StopIteration:
            _add(stage, started)
            return
        _add(stage, started)
        yield item


def timed(stage: str, owner: object, name: str) -> None:
    """Wrap ``owner.name`` so the seconds spent in it (in each step, for a generator) add up under ``stage``."""
    original = getattr(owner, name)
    STAGES[stage] += 0.0  # listed even when never called
    CPU[stage] += 0.0

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        started = _clocks()
        try:
            result = original(*args, **kwargs)
        finally:
            _add(stage, started)
        return _timed_steps(stage, result) if inspect.isgenerator(result) else result

    setattr(owner, name, wrapper)


def child(
    ortho: Path, model: Path, cores: int, block: int, batch: int, workers: int, threads: int, null: str, profile: bool
) -> dict:
    """One survey with the null network in this process: its Mpix/s, and with ``profile`` each stage's
    seconds (the timing slows the run: see the module's note)."""
    import pipeline.inference.blend as blend
    import pipeline.inference.runner as runner
    import pipeline.raster.cog as cog
    import pipeline.survey as survey
    from pipeline.checkpoint import file_sha256, read_metadata
    from pipeline.config import SurveyConfig
    from pipeline.inference.blockstore import BlockStore
    from pipeline.raster.cog import GeoTiffSink
    from pipeline.raster.source import BlockReader

    torch.set_num_threads(threads)
    meta = read_metadata(model)
    device = torch.device("cpu")
    null_network = runner.inference_network(NullNetwork(len(meta.classes), null).eval(), device)  # as cached
    survey._MODELS[(str(model), file_sha256(model), str(device))] = (null_network, meta)
    if profile:
        timed("read + decode", BlockReader, "_read_strip")  # in the decoding threads
        timed("nodata fill", runner, "mirror_fill")
        timed("upload", runner.TileRunner, "_upload")
        timed("network (null)", runner.TileRunner, "_probabilities")
        timed("tiles + blend (all of it)", runner.TileRunner, "blend_rows")
        timed("decision + quantise", blend, "decide_rows")
        timed("block store", BlockStore, "save")
        timed("block load (stitch)", BlockStore, "load")
        timed("block write (tiles compressed)", GeoTiffSink, "write")  # waits for its tiles' DEFLATE
        timed("tile DEFLATE (its pool)", cog, "deflate")
        timed("COG layout", GeoTiffSink, "build_cog")
    cfg = SurveyConfig(
        device="cpu", block=block, batch=batch, workers=workers, readers=max(2, cores), gsd_policy="ignore"
    )
    with tempfile.TemporaryDirectory() as out:
        started, cpu_started = time.perf_counter(), time.process_time()
        record = survey.run_survey(ortho, out, cfg, model_path=model)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    mpix = record.input.width * record.input.height / 1e6
    run = {
        "cores": cores,
        "workers": workers,
        "torch_threads": threads,
        "null": null,
        "seconds": seconds,
        "mpix_s": mpix / seconds,
        "cpu_s": cpu_seconds,
        "timings": record.timings.model_dump(),
    }
    if not profile:
        return run
    stages, cpu = _blend_alone(STAGES), _blend_alone(CPU)
    cpu["rest (validation, glue, untimed work)"] = cpu_seconds - sum(cpu.values())
    host_s = sum(cpu.get(k, 0.0) for k in HOST_STAGES)
    return run | {
        "stages": stages,
        "cpu_stages": cpu,
        "host_s": host_s,
        "host_mpix_s_per_core": mpix / host_s if host_s else None,  # host_s is core-seconds
    }


def _blend_alone(seconds: dict[str, float]) -> dict[str, float]:
    """Stage seconds with the blend's own share in place of the whole tile loop (which includes three stages)."""
    stages = dict(seconds)
    inner = sum(stages.get(k, 0.0) for k in ("nodata fill", "upload", "network (null)"))
    stages["blend (accumulate)"] = stages.pop("tiles + blend (all of it)", 0.0) - inner
    return stages


def compose(size: int, folder: Path) -> Path:
    from pipeline.config import DataConfig
    from pipeline.data.mosaic import compose_mosaic

    ortho = folder / f"engine_{size}.tif"
    if not ortho.exists():
        compose_mosaic(
            CFD / "images", CFD / "masks", ortho, folder / f"engine_{size}_truth.tif", size, size, 0.001,
            "EPSG:32633", DataConfig().classes, compress="jpeg", footprint=True, seed=size,
        )  # fmt: skip
    return ortho


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--block", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", default="cores", help="blocks inferred at once: a number, or cores (one per core)")
    parser.add_argument(
        "--torch-threads",
        default="1",
        help="torch's CPU threads: 1 (the null network stands in for a GPU, whose host needs no"
        " intra-op threads) or cores",
    )
    parser.add_argument(
        "--null",
        choices=["shaped", "noisy"],
        default="shaped",
        help="shaped: output like the shipped model's (mostly confident background); noisy: the encoders' worst case",
    )
    parser.add_argument("--model", type=Path, default=SHIPPED, help="whose classes and decision rule to use")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        help="a checkout of other code (e.g. `git worktree add /tmp/base main`): run it and this code as"
        " pairs at the same time on two cores, one core each, swapping cores every pair, and print the time"
        " ratios (this / that). Pairs share the machine's noise, which run-after-run comparisons do not",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per core count (in rounds); the run with the median time is shown"
    )
    parser.add_argument("--pairs", type=int, default=6, help="pairs to run with --against")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ortho", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)  # a child that times its stages
    args = parser.parse_args()
    if args.child:
        workers = args.child if args.workers == "cores" else int(args.workers)
        threads = args.child if args.torch_threads == "cores" else int(args.torch_threads)
        result = child(
            args.ortho,
            args.model.resolve(),
            args.child,
            args.block,
            args.batch,
            workers,
            threads,
            args.null,
            args.profile,
        )
        print(json.dumps(result))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="msaf-engine-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ortho = compose(args.size, workdir)
    available = sorted(os.sched_getaffinity(0))
    if args.against:
        compare_pairs(args, ortho, available)
        return
    scaling = [core_scaling(args.cores)]  # what the machine itself gives, before and after the engine's runs
    runs: dict[int, list[dict]] = {cores: [] for cores in args.cores}
    for _ in range(args.repeat):  # rounds of every core count, so the machine's drift hits each alike
        for cores in args.cores:
            runs[cores].append(_measured(args, ortho, cores, available, profile=False))
    profiles = {cores: _measured(args, ortho, cores, available, profile=True) for cores in args.cores}
    results = [_median_run(runs[cores]) | _stages_of(profiles[cores]) for cores in args.cores]
    scaling.append(core_scaling(args.cores))

    table = Table(
        title=f"engine only ({args.null} null network, {args.model.name}'s classes and decision),"
        f" {args.size}², block {args.block}"
    )
    table.add_column("stage (s, summed over threads)")
    for result in results:
        table.add_column(f"{result['cores']} core(s)")
    for stage in results[0]["stages"]:
        table.add_row(stage, *(f"{r['stages'].get(stage, 0.0):.2f}" for r in results))
    table.add_section()
    for stage in results[0]["cpu_stages"]:
        table.add_row(f"CPU s: {stage}", *(f"{r['cpu_stages'].get(stage, 0.0):.2f}" for r in results))
    table.add_row("CPU s: the profiled process", *(f"{r['profiled_cpu_s']:.2f}" for r in results))
    table.add_row("Mpix/s of the profiled run", *(f"{r['profiled_mpix_s']:.1f}" for r in results))
    table.add_section()
    table.add_row("CPU s (unprofiled)", *(f"{r['cpu_s']:.2f}" for r in results))
    table.add_row("wall seconds (unprofiled)", *(f"{r['seconds']:.2f}" for r in results))
    table.add_row("Mpix/s end to end", *(f"{r['mpix_s']:.1f}" for r in results))
    if args.repeat > 1:
        table.add_row(
            f"Mpix/s over {args.repeat} runs (min-max)",
            *(f"{min(r['runs_mpix_s']):.1f}-{max(r['runs_mpix_s']):.1f}" for r in results),
        )
    if len(results) > 1:
        table.add_row("speed-up vs first", *(f"{r['mpix_s'] / results[0]['mpix_s']:.2f}x" for r in results))
        for kernel in scaling[0]:  # the same ratio for plain work on this machine, before / after the runs
            table.add_row(
                f"machine, {kernel} work: n cores vs one (before / after)",
                *(_before_after(scaling, kernel, r["cores"]) for r in results),
            )
    table.add_row("host-side s (GPU host's CPU work)", *(f"{r['host_s']:.2f}" for r in results))
    table.add_row("host-side Mpix/s per core", *(f"{r['host_mpix_s_per_core']:.1f}" for r in results))
    Console(width=150).print(table)
    if args.out:
        from pipeline.fsutil import write_json

        write_json(
            args.out,
            {
                "size": args.size,
                "block": args.block,
                "null": args.null,
                "repeat": args.repeat,
                "machine": machine(),
                "machine_scaling": {"before": scaling[0], "after": scaling[1]},
                "results": results,
            },
        )


def _before_after(scaling: list[dict[str, dict[int, float]]], kernel: str, cores: int) -> str:
    """``cores``' ratio for ``kernel`` in both measurements, or "-" where the machine has fewer cores."""
    ratios = [measured[kernel].get(cores) for measured in scaling]
    return " / ".join(f"{ratio:.2f}x" for ratio in ratios if ratio is not None) or "-"


def _measured(args: argparse.Namespace, ortho: Path, cores: int, available: list[int], *, profile: bool) -> dict:
    """One child run of this checkout on ``cores`` cores (pinned when the machine has more)."""
    pin = available[:cores] if len(available) > cores else None
    command, kwargs = _child_run(REPO, args, ortho, cores, pin)
    done = subprocess.run([*command, *(["--profile"] if profile else [])], capture_output=True, text=True, **kwargs)
    if done.returncode:
        sys.exit(f"{cores} core(s) failed:\n{done.stderr[-4000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(run), flush=True)
    return run


def _stages_of(profiled: dict) -> dict:
    """A profiled run's stage times, and its own rate and CPU seconds under their own names."""
    keep = ("stages", "cpu_stages", "host_s", "host_mpix_s_per_core")
    return {key: profiled[key] for key in keep} | {
        "profiled_seconds": profiled["seconds"],
        "profiled_mpix_s": profiled["mpix_s"],
        "profiled_cpu_s": profiled["cpu_s"],
    }


def _median_run(runs: list[dict]) -> dict:
    """The run with the median time (its stages as measured), with every run's Mpix/s beside it."""
    median = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
    return {**median, "runs_mpix_s": [run["mpix_s"] for run in runs]}


def _child_run(
    checkout: Path, args: argparse.Namespace, ortho: Path, cores: int, pin: list[int] | None
) -> tuple[list[str], dict]:
    """Command and keyword arguments of one child run of ``checkout``'s bench and code."""
    command = ["taskset", "-c", ",".join(map(str, pin))] if pin else []
    command += [sys.executable, str(checkout / "bench" / Path(__file__).name), "--child", str(cores)]
    command += ["--ortho", str(ortho), "--model", str(args.model), "--block", str(args.block)]
    command += ["--batch", str(args.batch), "--workers", args.workers, "--torch-threads", args.torch_threads]
    command += ["--null", args.null]
    threads = str(cores if args.torch_threads == "cores" else args.torch_threads)
    # that checkout's pipeline first; what PYTHONPATH already held after it (a GPU host's wheels in /tmp/site)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": python_path(checkout)}
    return command, {"env": env}


def compare_pairs(args: argparse.Namespace, ortho: Path, available: list[int]) -> None:
    """This code against ``args.against``, one core each, at the same time; ratios of their seconds."""
    if len(available) < 2:
        sys.exit("--against needs two cores: one for each side of a pair")
    other = args.against.resolve()
    if not (other / "bench" / Path(__file__).name).exists():
        sys.exit(f"{other} has no bench/{Path(__file__).name}: give a checkout of this repository")
    ratios = []
    for pair in range(args.pairs):
        mine, theirs = (available[0], available[1]) if pair % 2 == 0 else (available[1], available[0])
        runs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
            for command, kwargs in (
                _child_run(REPO, args, ortho, 1, [mine]),
                _child_run(other, args, ortho, 1, [theirs]),
            )
        ]
        seconds = []
        for run in runs:
            out, err = run.communicate()
            if run.returncode:
                sys.exit(f"pair {pair + 1} failed:\n{err[-4000:]}")
            seconds.append(json.loads(out.strip().splitlines()[-1])["seconds"])
        ratios.append(seconds[0] / seconds[1])
        print(f"pair {pair + 1}: this {seconds[0]:.2f} s, that {seconds[1]:.2f} s, ratio {ratios[-1]:.3f}", flush=True)
    faster = sum(r < 1 for r in ratios)
    print(
        f"this / that over {len(ratios)} pairs: mean {sum(ratios) / len(ratios):.3f}, median"
        f" {sorted(ratios)[len(ratios) // 2]:.3f}, this faster in {faster} (the same code against itself"
        " measured 0.97-1.11, mean 1.03, on the CI machine)"
    )


if __name__ == "__main__":
    main()
