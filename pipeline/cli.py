"""The `msaf` command line: thin wrappers that turn MsafError into one clear line and exit 2."""

from __future__ import annotations

import functools
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.table import Table

import pipeline
from pipeline.errors import MsafError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="MSAF bridge-defect segmentation pipeline.")
console = Console(soft_wrap=True)
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Print expected mistakes as one line on stderr (no traceback) and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MsafError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]: no output was finalised")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _parse_sets(sets: list[str]) -> dict[str, Any]:
    """``--set train.lr=0.01`` -> {"train.lr": 0.01}; values are parsed as YAML scalars."""
    parsed = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MsafError(f"--set expects KEY=VALUE (e.g. train.epochs=3), got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_metrics(summary: dict[str, Any]) -> None:
    """Per-class metrics as a table."""
    table = Table(title=f"{summary.get('images', '?')} images, F1 tolerance {summary['tolerance_px']} px")
    for column in ("class", "IoU", "precision", "recall", "F1", "tol F1", "pixels"):
        table.add_column(column, justify="right" if column != "class" else "left")
    for name, m in summary["classes"].items():
        table.add_row(name, *(_fmt(m.get(k, "")) for k in ("iou", "precision", "recall", "f1", "tol_f1", "support")))
    console.print(table)
    console.print(f"mIoU {summary['miou']:.4f}  foreground IoU {summary['fg_iou']:.4f}  "
                  f"F1 {summary['fg_f1']:.4f}  tolerant F1 {summary['fg_tol_f1']:.4f}")


@app.command()
@user_errors
def train(
    params: Annotated[Path, typer.Option(help="params.yaml to read")] = Path("params.yaml"),
    out: Annotated[Path | None, typer.Option(help="checkpoint path (default: train.out)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a param, e.g. train.epochs=3")] = [],  # noqa: B006
) -> None:
    """Train a model from params.yaml and write a safetensors checkpoint."""
    from pipeline.config import load_params
    from pipeline.training.trainer import train_model

    cfg = load_params(params, _parse_sets(set_))
    console.print(f"training [bold]{cfg.model.preset}[/] on {cfg.data.images} for {cfg.train.epochs} epochs")

    def report(r: dict[str, Any]) -> None:
        console.print(f"epoch {r['epoch']:3d}/{cfg.train.epochs}  loss {r['loss']:.4f}  lr {r['lr']:.2e}  "
                      f"val IoU {r['val_fg_iou']:.4f}  F1 {r['val_fg_f1']:.4f}  tol-F1 {r['val_fg_tol_f1']:.4f}  "
                      f"({r['seconds']:.1f} s)")

    result = train_model(cfg, out=out, on_epoch=report)
    best = result.metadata.metrics["val"]
    console.print(f"wrote {result.checkpoint} (sha256 {result.sha256[:12]}, best epoch {best['epoch']}, "
                  f"val tolerant F1 {best['fg_tol_f1']:.4f})")


@app.command()
@user_errors
def evaluate(
    model: Annotated[Path, typer.Option(help="checkpoint (.safetensors)")],
    images: Annotated[Path, typer.Option(help="folder of images")],
    masks: Annotated[Path, typer.Option(help="folder of masks, same file stems")],
    out: Annotated[Path, typer.Option(help="metrics JSON to write")] = Path("metrics.json"),
    tolerance: Annotated[float, typer.Option(help="tolerance (px) for the thin-structure F1")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Score a model on labelled images; print a table and write metrics JSON."""
    from pipeline.evaluate import evaluate_folder
    from pipeline.fsutil import write_json

    summary = evaluate_folder(model, images, masks, device=device, tolerance_px=tolerance)
    print_metrics(summary)
    write_json(out, summary)
    console.print(f"wrote {out}")


@app.command()
def doctor() -> None:
    """Print versions and hardware, to paste into bug reports."""
    import numpy
    import rasterio
    import torch

    rows = {
        "msaf-pipeline": pipeline.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available",
        "cpu threads": str(torch.get_num_threads()),
        "numpy": numpy.__version__,
        "rasterio / GDAL": f"{rasterio.__version__} / {rasterio.__gdal_version__}",
    }
    for key, value in rows.items():
        console.print(f"{key:>16}: {value}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
