"""The `msaf` application and what its commands share: one-line errors (exit 2), settings lookup,
argument parsing. Commands live beside it, one module per group, each a thin call into the library."""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console

from pipeline.errors import MsafError
from pipeline.stop import request_stop

if TYPE_CHECKING:
    from pipeline.config import Params


app = typer.Typer(add_completion=False, no_args_is_help=True, help="MSAF bridge-defect segmentation pipeline.")
console = Console(soft_wrap=True)
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
MetaOption = Annotated[
    list[str],
    typer.Option("--meta", help="job detail KEY=VALUE (structure_id, element, inspector, flight_date, notes, ...)"),
]
MetaFileOption = Annotated[Path | None, typer.Option(help="job details as YAML (KEY: VALUE)")]
PARAMS_HELP = "settings file (default: MSAF_PARAMS, else the project's params.yaml, else built-in defaults)"


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
            err_console.print("[bold red]interrupted[/]: no file was left half-written")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_sets(sets: list[str]) -> dict[str, Any]:
    """``--set train.lr=0.01`` -> {"train.lr": 0.01}; values are parsed as YAML scalars."""
    parsed = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MsafError(f"--set expects KEY=VALUE (e.g. train.epochs=3), got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def fmt(value: object) -> str:
    """Floats to 4 decimals for tables; anything else as text."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def required_params(explicit: Path | None) -> Path:
    """The settings file a data/training command needs (it has no meaningful built-in data sets)."""
    from pipeline.locations import params_path

    path, _ = params_path(explicit)
    if path is None:
        raise MsafError("no params.yaml: run this in the project folder, or pass --params FILE (or set MSAF_PARAMS)")
    return path


def load_optional_params(explicit: Path | None, survey_overrides: dict[str, Any] | None = None) -> Params:
    """Settings by the documented precedence (``pipeline.locations``); a named file must exist."""
    from pipeline.config import load_params_or_defaults
    from pipeline.locations import params_path

    path, source = params_path(explicit)
    return load_params_or_defaults(path, survey_overrides, required=source != "project folder")


def params_for_flow(explicit: Path | None) -> str | None:
    """The settings file to hand to a flow as an absolute path (flows may run in other processes)."""
    from pipeline.locations import params_path

    path, _ = params_path(explicit)
    return str(path.resolve()) if path else None


def parse_size(text: str) -> tuple[int, int]:
    """``W`` or ``WxH`` in pixels."""
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height or width)
    except ValueError:
        raise MsafError(f"--size expects W or WxH in pixels (e.g. 8192 or 8192x6000), got {text!r}") from None


def parse_views(text: str) -> tuple[float, ...]:
    """``--scales`` (e.g. ``1,2``) as a survey's views, or one line saying what is wrong."""
    from pipeline.inference.scales import parse_scales  # torch-free

    try:
        return parse_scales(text)
    except ValueError as exc:
        raise MsafError(f"--scales: {exc}") from None


SCALES_HELP = (
    "views averaged per tile, relative to the model's GSD, e.g. 1,2: also enlarged 2x (thin cracks; 5x the"
    " network's work; a finer input's finest view is its own pixels)"
)


def main() -> None:
    """Console-script entry point."""
    import warnings

    try:
        from rasterio.errors import NotGeoreferencedWarning
    except ImportError:  # an environment for training on photos alone (a GPU image): no raster to warn about
        pass
    else:  # a missing georeference is reported as a clear error (or handled with --assume-crs), not a warning
        warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    # the terminal shows progress and results; Prefect's run logs stay in its API/UI (set INFO to see them here)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    signal.signal(signal.SIGINT, _interrupt)
    app()


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C: ask the survey's worker threads to stop at their next batch, then interrupt the main
    thread as Python would (``user_errors`` turns it into one line, exit 130)."""
    request_stop()
    raise KeyboardInterrupt
