"""`msaf survey`, `mosaic`, `report`, `compare`, `history`, `schedule`: processing orthomosaics and reporting."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from pipeline.errors import MsafError

if TYPE_CHECKING:
    from pipeline.config import SurveyConfig
    from pipeline.report.result import ReportResult
    from pipeline.survey import PreparedSurvey

from flows.cli.app import (
    PARAMS_HELP,
    SCALES_HELP,
    MetaFileOption,
    MetaOption,
    console,
    err_console,
    load_optional_params,
    params_for_flow,
    parse_size,
    parse_views,
    user_errors,
)


@user_errors
def survey(
    ortho: Annotated[str, typer.Argument(help="orthomosaic (GeoTIFF/COG, RGB or RGBA); a URL with --allow-remote")],
    out: Annotated[Path, typer.Option(help="output folder (mask.tif, confidence.tif, survey.json)")],
    model: Annotated[Path | None, typer.Option(help="checkpoint (default: survey.model in params.yaml)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    tile: Annotated[int | None, typer.Option(help="tile side (default: the model's training tile)")] = None,
    overlap: Annotated[int | None, typer.Option(help="tile overlap in px (default: tile // 4)")] = None,
    block: Annotated[int | None, typer.Option(help="block core size in px")] = None,
    batch: Annotated[int | None, typer.Option(help="tiles per forward pass")] = None,
    workers: Annotated[int | None, typer.Option(help="blocks inferred concurrently")] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="flip test-time augmentation")] = None,
    scales: Annotated[
        str | None,
        typer.Option(help=SCALES_HELP),
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto (bf16 on CUDA, fp32 on a CPU), fp32, or bf16 (a CPU with native bf16)")
    ] = None,
    exposure_floor: Annotated[
        float | None,
        typer.Option(help="lift tiles darker than this mean luminance (0-255) to it; 0: off (default: the model's)"),
    ] = None,
    with_report: Annotated[bool, typer.Option("--report/--no-report", help="write the defect report too")] = True,
    assume_crs: Annotated[str | None, typer.Option(help="CRS for a raster that has none, e.g. EPSG:32633")] = None,
    aoi: Annotated[
        Path | None,
        typer.Option(help="survey only inside these polygons (GeoPackage, GeoJSON, Shapefile...; any CRS)"),
    ] = None,
    aoi_layer: Annotated[str | None, typer.Option(help="layer of --aoi (default: its first)")] = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="log the survey to MLflow")] = True,
    engine: Annotated[str, typer.Option(help="local (threads) or dask (a Dask cluster)")] = "local",
    dask_address: Annotated[str | None, typer.Option(help="existing scheduler, e.g. tcp://host:8786")] = None,
    dask_workers: Annotated[int | None, typer.Option(help="workers of a cluster started here (CPU)")] = None,
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
    meta: MetaOption = [],  # noqa: B006
    meta_file: MetaFileOption = None,
    allow_vrt: Annotated[bool | None, typer.Option("--allow-vrt", help="read a VRT input (trusted only)")] = None,
    allow_remote: Annotated[
        bool | None, typer.Option("--allow-remote", help="read URLs and GDAL virtual file systems (/vsicurl/, /vsis3/)")
    ] = None,
) -> None:
    """Segment an orthomosaic into a georeferenced defect mask (COG) + confidence + survey.json + report.

    Runs the Prefect survey flow (resumable: a rerun after a crash re-does only missing blocks).
    Without --model the registry's champion is used (the shipped model becomes the first champion).
    """
    if engine not in ("local", "dask"):
        raise MsafError(f"--engine must be local or dask, got {engine!r}")
    flags = {
        "device": device,
        "tile": tile,
        "overlap": overlap,
        "block": block,
        "batch": batch,
        "workers": workers,
        "tta": tta,
        "scales": parse_views(scales) if scales is not None else None,
        "precision": precision,
        "exposure_floor": exposure_floor,
        "allow_vrt": allow_vrt,
        "allow_remote": allow_remote,
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    settings = load_optional_params(params, overrides)
    _check_arguments_first(ortho, out, settings.survey, assume_crs, aoi, aoi_layer)
    from flows.server import server_started_early

    with server_started_early():  # Prefect's API boots while the survey's modules load and it validates
        if model is not None:
            _check_model_first(model)
        from pipeline.job import parse_job
        from pipeline.survey_folder import SurveyFolder
        from pipeline.survey_plan import SurveyRequest

        request = SurveyRequest(
            ortho=str(ortho),
            out=str(out),
            params=settings,
            model=str(model) if model else None,
            assume_crs=assume_crs,
            aoi=str(aoi) if aoi else None,
            aoi_layer=aoi_layer,
            job=parse_job(meta, meta_file),
            report=with_report,
            track=track,
        )
        from flows.survey import run_survey_flow

        outcome = run_survey_flow(
            request, engine=engine, dask_address=dask_address, dask_workers=dask_workers, watch=_block_progress
        )
        record = outcome.record
        pixels = ", ".join(f"{name} {count:,}" for name, count in record.class_pixels.items())
        if record.model.registry:
            console.print(f"model: {record.model.registry}")
        console.print(
            f"{record.input.width}x{record.input.height} px in {record.timings.total_s:.1f} s "
            f"({record.throughput_mpix_s.end_to_end:.2f} Mpix/s, peak RSS {record.peak_rss_mb:.0f} MiB, "
            f"{record.tiling.blocks_reused} of {record.tiling.blocks} blocks reused)"
        )
        console.print(f"class pixels: {pixels}")
        if area := record.area_of_interest:
            share = f"{area.raster_share:.1%} of the raster"
            console.print(f"area of interest: {area.path}, {area.area_m2:,.1f} m² ({share})")
        if record.input.footprint == "none" or record.collar is not None:
            console.print(f"footprint: {record.footprint}")
        if record.device == "cpu" and record.precision == "fp32" and precision is None:
            from pipeline.inference.device import cpu_has_native_bf16

            if cpu_has_native_bf16():
                console.print(
                    "this CPU runs bf16 natively: --precision bf16 surveys ~1.7x faster (README: bf16 on a CPU)"
                )
        folder = SurveyFolder(out)
        console.print(f"wrote {folder.mask}, {folder.confidence}, {folder.record}")
        if outcome.report:
            _print_report_summary(out, outcome.report)
        if outcome.mlflow_run:
            console.print(f"MLflow run {outcome.mlflow_run} (experiment 'surveys')")


def _check_arguments_first(
    ortho: str, out: Path, cfg: SurveyConfig, assume_crs: str | None, aoi: Path | None, aoi_layer: str | None
) -> None:
    """The input, the area of interest, the output folder and the device checked before the survey's
    machinery loads: a mistyped path, a raster without a CRS, an area that misses the raster, a file
    where the output folder goes or cuda with a CPU-only PyTorch is one line in about a second, where
    Prefect, MLflow's store and torch took 3-8 s to load first. The survey checks them again (one
    owner each; these checks cost milliseconds, the area's file read aside)."""
    from pipeline.inference.device import check_device_name
    from pipeline.raster.aoi import read_area_of_interest
    from pipeline.raster.source import open_source
    from pipeline.survey_folder import check_output_folder

    info = open_source(ortho, cfg.scaling, assume_crs, allow_vrt=cfg.allow_vrt, allow_remote=cfg.allow_remote)
    if aoi is not None:
        read_area_of_interest(aoi, aoi_layer, info.crs, info.transform, info.width, info.height)
    check_output_folder(out)
    check_device_name(cfg.device)


def _check_model_first(model: Path) -> None:
    """A named model checked (its metadata, its tensors' names and shapes) while Prefect's server
    boots, before Prefect loads here: a mistyped or mixed-up model is one line in ~2 s instead of
    ~5.5 s. It loads torch, which the survey loads anyway; the survey checks again (one owner:
    ``pipeline.checkpoint``; the shapes are kept, so the second check reads a header)."""
    from pipeline.checkpoint import check_weights, read_metadata

    check_weights(model, read_metadata(model))


@contextmanager
def _block_progress(prepared: PreparedSurvey) -> Iterator[None]:
    """A progress bar of finished blocks, read from the block store (works for every engine)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.inference.blockstore import stored_indices

    stop = threading.Event()
    total = prepared.n_blocks
    columns = (TextColumn("blocks"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("survey", total=total)

        def poll() -> None:
            while not stop.wait(0.5):
                folder = prepared.store_dir
                done = len(stored_indices(folder)) if folder.exists() else total
                progress.update(task, completed=done)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()


@user_errors
def mosaic(
    images: Annotated[Path, typer.Option(help="folder of labelled photos")],
    masks: Annotated[Path, typer.Option(help="folder of their masks")],
    out: Annotated[Path, typer.Option(help="orthomosaic GeoTIFF to write")],
    truth: Annotated[Path, typer.Option(help="ground-truth class raster to write")],
    size: Annotated[str, typer.Option(help="W or WxH in pixels")] = "8192",
    gsd: Annotated[float, typer.Option(help="ground sample distance, metres per pixel")] = 0.001,
    crs: Annotated[str, typer.Option(help="projected CRS, e.g. EPSG:32633")] = "EPSG:32633",
    compress: Annotated[str, typer.Option(help="jpeg or deflate")] = "jpeg",
    footprint: Annotated[bool, typer.Option(help="irregular nodata footprint (alpha or internal mask)")] = False,
    seed: Annotated[int, typer.Option(help="random seed of the layout")] = 0,
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
) -> None:
    """Compose test data: a georeferenced raster of labelled photos with exact truth (not an orthomosaicking tool)."""
    from pipeline.data.mosaic import compose_mosaic

    if compress not in ("jpeg", "deflate"):
        raise MsafError(f"--compress must be jpeg or deflate, got {compress!r}")
    codec: Literal["jpeg", "deflate"] = "jpeg" if compress == "jpeg" else "deflate"
    width, height = parse_size(size)
    classes = load_optional_params(params).data.classes
    summary = compose_mosaic(
        images, masks, out, truth, width, height, gsd, crs, classes, compress=codec, footprint=footprint, seed=seed
    )
    console.print(
        f"wrote {out} and {truth}: {width}x{height} px at {gsd * 1000:g} mm/px ({summary['crs']}), "
        f"footprint {summary['footprint_fraction']:.0%}, defects {summary['defect_fraction']:.2%}"
    )


@user_errors
def report(
    survey_dir: Annotated[Path, typer.Argument(help="survey folder (mask.tif, confidence.tif, survey.json)")],
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
    image: Annotated[
        Path | None,
        typer.Option(help="orthomosaic to read crack widths from (default: the survey's input, if still there)"),
    ] = None,
    meta: MetaOption = [],  # noqa: B006  (with `msaf report`: added to the survey's details)
    meta_file: MetaFileOption = None,
    pdf: Annotated[bool, typer.Option("--pdf", help="also print report.pdf with headless chromium")] = False,
    paper: Annotated[str, typer.Option(help="paper for --pdf: a4 or letter")] = "a4",
    elements: Annotated[
        Path | None,
        typer.Option(help="the structure's element polygons (any vector file, any CRS): condition states per element"),
    ] = None,
    elements_layer: Annotated[str | None, typer.Option(help="layer of --elements (default: its first)")] = None,
    element_field: Annotated[str, typer.Option(help="field of --elements that names each element")] = "element",
) -> None:
    """Vectorise and measure defects; write defects.gpkg/.geojson/.csv/.parquet/.dxf and report.html (and .pdf)."""
    from pipeline.config import ElementsConfig
    from pipeline.job import parse_job
    from pipeline.report.build import report_survey
    from pipeline.survey_folder import SurveyFolder

    if paper.lower() not in ("a4", "letter"):
        raise MsafError(f"--paper must be a4 or letter, got {paper!r}")
    structure = ElementsConfig(path=elements, layer=elements_layer, field=element_field) if elements else None
    summary = report_survey(
        survey_dir, load_optional_params(params).report, image, job=parse_job(meta, meta_file), elements=structure
    )
    if pdf:
        from pipeline.report.pdf import print_pdf

        folder = SurveyFolder(survey_dir)
        summary.outputs["pdf"] = print_pdf(folder.html, folder / SurveyFolder.PDF, paper).name
    _print_report_summary(survey_dir, summary)


@user_errors
def compare(
    old_survey: Annotated[Path, typer.Argument(help="earlier survey folder")],
    new_survey: Annotated[Path, typer.Argument(help="later survey folder")],
    out: Annotated[Path, typer.Option(help="folder for changes.gpkg/.geojson/.csv and report.html")],
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
    old_image: Annotated[
        Path | None,
        typer.Option(
            help="the earlier survey's orthomosaic, to register the epochs (default: its input, if still there)"
        ),
    ] = None,
    new_image: Annotated[
        Path | None,
        typer.Option(
            help="the later survey's orthomosaic, to register the epochs (default: its input, if still there)"
        ),
    ] = None,
    registration: Annotated[
        str | None,
        typer.Option(
            help="auto: move the later survey onto the earlier by their orthomosaics' offset; off: as they lie"
        ),
    ] = None,
    pdf: Annotated[bool, typer.Option("--pdf", help="also print report.pdf (needs Chromium)")] = False,
    paper: Annotated[str, typer.Option(help="paper for --pdf: a4 or letter")] = "a4",
) -> None:
    """Register two surveys, match their defects and classify each as new, grown, unchanged, shrunk or not found."""
    from pipeline.report.compare import compare_surveys

    if paper.lower() not in ("a4", "letter"):
        raise MsafError(f"--paper must be a4 or letter, got {paper!r}")
    cfg = load_optional_params(params).report
    if registration is not None:
        if registration not in ("auto", "off"):
            raise MsafError(f"--registration must be auto or off, got {registration!r}")
        cfg = cfg.model_copy(update={"registration": cfg.registration.model_copy(update={"mode": registration})})
    result = compare_surveys(old_survey, new_survey, out, cfg, old_image, new_image)
    outputs = list(result.outputs)
    if pdf:
        from pipeline.report.pdf import print_pdf
        from pipeline.survey_folder import SurveyFolder

        outputs.append(print_pdf(out / SurveyFolder.HTML, out / SurveyFolder.PDF, paper).name)
    console.print(f"registration: {result.registration.summary()}")
    console.print(", ".join(f"{count} {status}" for status, count in result.changes.items()))
    if result.cracks:
        console.print("per crack: " + ", ".join(f"{count} {status}" for status, count in result.cracks.items()))
    console.print(f"wrote {', '.join(str(out / f) for f in outputs)}")


@user_errors
def history(
    surveys: Annotated[list[Path], typer.Argument(help="two or more survey folders of one structure (any order)")],
    out: Annotated[
        Path,
        typer.Option(
            help="folder for history.gpkg/.csv, report.html, pairs/ (each pair's changes) and to_latest/ "
            "(each earlier survey's changes to the latest)"
        ),
    ],
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
) -> None:
    """Follow each crack through several surveys: since when, how fast it lengthens and widens."""
    from pipeline.report.history import crack_history

    result = crack_history(surveys, out, load_optional_params(params).report)
    console.print(result.summary())
    folders = [str(out / name) for name in result.comparisons]
    console.print(f"wrote {', '.join(str(out / f) for f in result.outputs)} and {' and '.join(folders)}")


def _print_report_summary(survey_dir: Path, summary: ReportResult) -> None:
    if summary.defects:
        by_class = ", ".join(f"{name} {count}" for name, count in summary.by_class.items())
        console.print(f"{summary.defects} defects ({by_class})")
        if summary.cracks_by_type:
            kinds = ", ".join(f"{count} {kind}" for kind, count in summary.cracks_by_type.items())
            console.print(f"cracks by type: {kinds}")
    else:
        console.print("no defects found")
    if summary.condition_m2:
        areas = ", ".join(f"{state} {area:.3g} m²" for state, area in summary.condition_m2.items())
        console.print(f"condition states (cracking): {areas}")
    if summary.unrated_m2:
        unrated = " and ".join(f"{area:.3g} m² {verdict}" for verdict, area in summary.unrated_m2.items())
        console.print(f"cannot show a crack: {unrated} (rated up to CS3; re-fly it lit, exposed and in focus)")
    if summary.blur_px is not None:
        console.print(
            f"image blur: {summary.blur_px:.2f} px ({summary.blur_mm:.2g} mm) median over the surveyed ground"
        )
    console.print(f"wrote {', '.join(str(survey_dir / f) for f in summary.outputs.values())}")


def _check_cron(cron: str) -> None:
    """A cron string Prefect accepts, or one line before anything is served."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise MsafError(f'--cron {cron!r} is not a cron schedule; e.g. "0 2 * * *" (02:00 daily)') from None


def _check_server(api: str) -> None:
    """The Prefect server answers (within seconds), or one line naming how to start it."""
    import httpx

    try:
        httpx.get(f"{api.rstrip('/')}/health", timeout=3).raise_for_status()
    except httpx.HTTPError as exc:
        raise MsafError(
            f"no Prefect server answers at {api} ({exc.__class__.__name__}); start one with `prefect server start`"
        ) from None


@user_errors
def schedule(
    inbox: Annotated[Path | None, typer.Option(help="folder where new orthomosaics arrive")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for the surveys (one sub-folder each)")] = None,
    cron: Annotated[str, typer.Option(help="cron schedule (server time zone)")] = "0 2 * * *",
    name: Annotated[str, typer.Option(help="deployment name")] = "msaf-inbox",
    model: Annotated[Path | None, typer.Option(help="checkpoint (default: the registry champion)")] = None,
    retrain: Annotated[bool, typer.Option("--retrain", help="schedule `dvc repro` retraining instead")] = False,
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
) -> None:
    """Serve a Prefect deployment on a cron schedule (needs a running `prefect server start`)."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        raise MsafError(
            "scheduling needs a Prefect server: run `prefect server start` (SQLite, no other service) "
            "and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    _check_cron(cron)
    _check_server(api)
    if retrain:
        from flows.retrain import retrain_flow

        console.print(f"serving deployment msaf-retrain/{name} ({cron}) against {api}; Ctrl-C stops it")
        retrain_flow.serve(name=name, cron=cron, parameters={"project": str(Path.cwd())})
        return
    if inbox is None or out is None:
        raise MsafError("--inbox and --out are required (or --retrain)")
    if not inbox.is_dir():
        raise MsafError(f"inbox folder not found: {inbox}")
    from flows.inbox import inbox_flow

    parameters = {
        "inbox": str(inbox.resolve()),
        "out": str(out.resolve()),
        "params_path": params_for_flow(params),
        "model": str(model.resolve()) if model else None,
    }
    console.print(
        f"serving deployment msaf-inbox/{name} ({cron}) against the Prefect server at {api}; "
        "each run surveys every new orthomosaic in the inbox once. Ctrl-C stops it."
    )
    inbox_flow.serve(name=name, cron=cron, parameters=parameters)
