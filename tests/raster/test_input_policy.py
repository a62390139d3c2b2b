"""What a survey agrees to read: north-up georeferenced rasters, no VRT tricks, remote only when allowed."""

from __future__ import annotations

import http.server
import shutil
import threading
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.transform import Affine, from_origin

from pipeline.config import SurveyConfig
from pipeline.errors import MsafError
from pipeline.survey import infer_blocks, prepare_survey, run_survey
from tests.conftest import assert_one_line_error, cpu_survey, run_msaf, write_raster

CPU = {"device": "cpu", "gsd_policy": "ignore", "batch": 4}
ORIGIN = from_origin(500000, 5000000, 0.001, 0.001)


def _pixels(seed: int = 0, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, *shape), dtype=np.uint8)


def _vrt(path: Path, bands: str, width: int = 128, height: int = 96) -> Path:
    path.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>500000, 0.001, 0, 5000000, 0, -0.001</GeoTransform>{bands}</VRTDataset>"
    )
    return path


def _simple_bands(source: str, relative: bool = True) -> str:
    return "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename '
        f'relativeToVRT="{int(relative)}">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for b in (1, 2, 3)
    )


def _raw_bands(target: str) -> str:
    return "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}" subClass="VRTRawRasterBand"><SourceFilename '
        f'relativeToVRT="0">{target}</SourceFilename><ImageOffset>0</ImageOffset><PixelOffset>1'
        "</PixelOffset><LineOffset>128</LineOffset></VRTRasterBand>"
        for b in (1, 2, 3)
    )


def _rotated(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "rotated.tif", _pixels(), transform=ORIGIN @ Affine.rotation(45))


def _skewed(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "skewed.tif", _pixels(), transform=ORIGIN @ Affine.shear(10, 0))


def _gcps_only(tmp_path: Path) -> Path:
    path = write_raster(tmp_path / "gcps.tif", _pixels(), crs=None, transform=Affine.identity())
    with rasterio.open(path, "r+") as ds:
        points = [
            GroundControlPoint(r, c, 500000 + c * 0.001, 5000000 - r * 0.001)
            for r, c in ((0, 0), (0, 127), (95, 0), (95, 127))
        ]
        ds.gcps = (points, rasterio.crs.CRS.from_epsg(32633))
    return path


def _jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    with rasterio.open(path, "w", driver="JPEG", width=128, height=96, count=3, dtype="uint8") as ds:
        ds.write(_pixels())
    return path


def _raw_vrt(tmp_path: Path) -> Path:
    return _vrt(tmp_path / "passwd.vrt", _raw_bands("/etc/passwd"))


def _raw_vrt_named_tif(tmp_path: Path) -> Path:
    return _vrt(tmp_path / "innocent.tif", _raw_bands("/etc/passwd"))


def _plain_vrt(tmp_path: Path) -> Path:
    write_raster(tmp_path / "a.tif", _pixels())
    return _vrt(tmp_path / "plain.vrt", _simple_bands("a.tif"))


def _curl_vrt(tmp_path: Path) -> Path:
    return _vrt(tmp_path / "curl.vrt", _simple_bands("/vsicurl/http://127.0.0.1:9/a.tif", relative=False))


REFUSALS = {
    "rotated": (_rotated, "gdalwarp", []),
    "skewed": (_skewed, "gdalwarp", []),
    "gcps_only": (_gcps_only, "ground control points", ["--assume-crs", "EPSG:32633"]),
    "plain_jpeg": (_jpeg, "no geotransform", ["--assume-crs", "EPSG:32633"]),
    "raw_band_vrt": (_raw_vrt, "--allow-vrt", []),
    "raw_band_vrt_allowed": (_raw_vrt, "VRTRawRasterBand", ["--allow-vrt"]),
    "raw_band_vrt_named_tif": (_raw_vrt_named_tif, "VRT inputs are not read by default", []),
    "plain_vrt": (_plain_vrt, "--allow-vrt", []),
    "vrt_with_network_source": (_curl_vrt, "--allow-remote", ["--allow-vrt"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_unsafe_or_unmeasurable_inputs_are_refused_in_one_line(tmp_path, tiny_model, case):
    make, expected, flags = REFUSALS[case]
    result = run_msaf(
        *cpu_survey(make(tmp_path), tmp_path / "out", tiny_model, "--no-track", "--no-report", *flags),
    )
    assert_one_line_error(result, expected)
    assert not (tmp_path / "out" / "mask.tif").exists()


def test_an_allowed_vrt_is_surveyed_like_its_source(tmp_path, tiny_model):
    vrt = _plain_vrt(tmp_path)
    direct = run_survey(tmp_path / "a.tif", tmp_path / "direct", SurveyConfig(**CPU), model_path=tiny_model)
    through = run_survey(vrt, tmp_path / "vrt", SurveyConfig(**CPU, allow_vrt=True), model_path=tiny_model)
    assert through.input.kind == "vrt" and direct.class_pixels == through.class_pixels
    with rasterio.open(tmp_path / "direct" / "mask.tif") as a, rasterio.open(tmp_path / "vrt" / "mask.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_a_changed_vrt_source_never_reuses_stale_blocks(tmp_path, tiny_model):
    vrt = _plain_vrt(tmp_path)
    cfg = SurveyConfig(**CPU, allow_vrt=True, block=32)
    first = prepare_survey(vrt, tmp_path / "out", cfg, model_path=tiny_model)
    infer_blocks(first, indices=list(range(first.n_blocks // 2)))  # then "killed"
    changed = _pixels(seed=9)
    write_raster(tmp_path / "a.tif", changed)  # the source changes, the VRT's bytes do not
    resumed = run_survey(vrt, tmp_path / "out", cfg, model_path=tiny_model)
    assert resumed.tiling.blocks_reused == 0
    write_raster(tmp_path / "fresh.tif", changed)
    run_survey(tmp_path / "fresh.tif", tmp_path / "fresh", cfg, model_path=tiny_model)
    with rasterio.open(tmp_path / "out" / "mask.tif") as a, rasterio.open(tmp_path / "fresh" / "mask.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_gdal_virtual_paths_need_allow_remote(tmp_path, tiny_model):
    write_raster(tmp_path / "a.tif", _pixels())
    with zipfile.ZipFile(tmp_path / "delivery.zip", "w") as archive:
        archive.write(tmp_path / "a.tif", "a.tif")
    inside = f"/vsizip/{tmp_path / 'delivery.zip'}/a.tif"
    with pytest.raises(MsafError, match="--allow-remote"):
        run_survey(inside, tmp_path / "refused", SurveyConfig(**CPU), model_path=tiny_model)
    record = run_survey(inside, tmp_path / "zip", SurveyConfig(**CPU, allow_remote=True), model_path=tiny_model)
    direct = run_survey(tmp_path / "a.tif", tmp_path / "direct", SurveyConfig(**CPU), model_path=tiny_model)
    assert record.input.path == inside and record.class_pixels == direct.class_pixels


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (what GDAL's /vsicurl/ needs)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end = 0, len(data) - 1
        ranged = self.headers.get("Range", "").startswith("bytes=")
        if ranged:
            first, _, last = self.headers["Range"][6:].partition("-")
            start, end = int(first or 0), min(int(last) if last else len(data) - 1, len(data) - 1)
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start : end + 1])

    def do_HEAD(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()


def test_a_url_is_surveyed_when_remote_inputs_are_allowed(tmp_path, tiny_model):
    served = tmp_path / "www"
    served.mkdir()
    write_raster(served / "ortho.tif", _pixels())
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ortho.tif"
    try:
        refused = run_msaf(
            *cpu_survey(url, tmp_path / "refused", tiny_model, "--no-track", "--no-report"),
        )
        assert_one_line_error(refused, "--allow-remote")
        result = run_msaf(
            *cpu_survey(url, tmp_path / "out", tiny_model, "--no-track", "--no-report", "--allow-remote"),
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    shutil.copy(served / "ortho.tif", tmp_path / "local.tif")
    run_survey(tmp_path / "local.tif", tmp_path / "local", SurveyConfig(**CPU), model_path=tiny_model)
    with rasterio.open(tmp_path / "out" / "mask.tif") as a, rasterio.open(tmp_path / "local" / "mask.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.transform == b.transform


def test_a_report_never_reads_what_a_survey_would_refuse(tmp_path):
    from pipeline.report.build import survey_image
    from pipeline.survey_record import InputRecord, SurveyRecord

    raw = str(_raw_vrt(tmp_path))

    def recorded(path: str, kind: str) -> SurveyRecord:  # only what survey_image reads
        return SurveyRecord.model_construct(input=InputRecord.model_construct(path=path, kind=kind))

    assert survey_image(recorded(raw, "vrt"), None) is None  # e.g. an edited survey.json
    assert survey_image(recorded("https://example.org/o.tif", "remote"), None) is None
    with pytest.raises(MsafError, match="VRTRawRasterBand"):
        survey_image(None, Path(raw))
    plain = _plain_vrt(tmp_path)
    assert survey_image(recorded(str(plain), "vrt"), None) == plain
    assert survey_image(recorded(str(plain), "file"), None) is None


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    """Counts every request (a tile server that must never be asked)."""

    hits: typing.ClassVar[list[str]] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_error(404)


def _gdal_xml(kind: str, tmp_path: Path, port: int) -> Path:
    if kind == "wms":
        text = (
            f'<GDAL_WMS><Service name="WMS"><ServerUrl>http://127.0.0.1:{port}/wms?</ServerUrl><Layers>x</Layers>'
            "<SRS>EPSG:32633</SRS></Service><DataWindow><UpperLeftX>500000</UpperLeftX><UpperLeftY>5000000"
            "</UpperLeftY><LowerRightX>500000.128</LowerRightX><LowerRightY>4999999.904</LowerRightY>"
            "<SizeX>128</SizeX><SizeY>96</SizeY></DataWindow><Projection>EPSG:32633</Projection>"
            "<BandsCount>3</BandsCount></GDAL_WMS>"
        )
    else:  # an MRF whose data file is any file on the machine
        text = (
            '<MRF_META><Raster><Size x="16" y="16" c="3"/><PageSize x="16" y="16" c="3"/><DataType>Byte</DataType>'
            "<Compression>NONE</Compression><DataFile>/etc/passwd</DataFile>"
            f"<IndexFile>{tmp_path / 'x.idx'}</IndexFile></Raster><GeoTags>"
            '<BoundingBox minx="500000" miny="4999999.984" maxx="500000.016" maxy="5000000"/>'
            "<Projection>EPSG:32633</Projection></GeoTags></MRF_META>"
        )
    path = tmp_path / f"{kind}.tif"  # named like an ordinary GeoTIFF
    path.write_text(text)
    return path


@pytest.mark.parametrize("kind", ["wms", "mrf"])
def test_gdal_xml_formats_named_tif_are_refused_without_a_request(tmp_path, kind):
    """GDAL opens a file by its content: a WMS XML saved as .tif fetched tiles without
    --allow-remote, an MRF XML surveyed /etc/passwd. Only ordinary raster drivers may open input."""
    _CountingHandler.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hostile = _gdal_xml(kind, tmp_path, server.server_address[1])
        model = Path(__file__).resolve().parents[2] / "pipeline" / "assets" / "msaf-dsnet.safetensors"
        result = run_msaf(*cpu_survey(hostile, tmp_path / "out", model, "--no-track"), timeout=120)
        assert_one_line_error(
            result, f"{kind}.tif: not a GeoTIFF/COG, JPEG, PNG or JPEG 2000 raster by its content", "WMS or MRF"
        )
        with pytest.raises(MsafError, match="by its content"):
            prepare_survey(hostile, tmp_path / "out2", SurveyConfig(**CPU, allow_vrt=True), model_path=model)
    finally:
        server.shutdown()
    assert _CountingHandler.hits == []
    assert not (tmp_path / "out" / "mask.tif").exists()


def test_colour_interpretation_is_honoured_or_refused(tmp_path):
    """A BGR file is read as the RGB it names; a paletted file or bands that are not colours are one line."""
    from rasterio.enums import ColorInterp

    from pipeline.config import ScalingConfig
    from pipeline.raster.grid import Box
    from pipeline.raster.source import BlockReader, open_source

    rgb = _pixels(3)
    write_raster(tmp_path / "rgb.tif", rgb, photometric="RGB")
    write_raster(tmp_path / "bgr.tif", rgb[::-1].copy())
    with rasterio.open(tmp_path / "bgr.tif", "r+") as ds:
        ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red]
    box = Box(5, 7, 90, 120)
    read = {}
    for name in ("rgb", "bgr"):
        info = open_source(tmp_path / f"{name}.tif", ScalingConfig())
        reader = BlockReader(info, threads=2)
        read[name] = reader.read(box)[0]
        reader.close()
    assert open_source(tmp_path / "bgr.tif", ScalingConfig()).bands == (3, 2, 1)
    np.testing.assert_array_equal(read["bgr"], read["rgb"])
    np.testing.assert_array_equal(read["rgb"], rgb[:, 5:90, 7:120])

    write_raster(tmp_path / "hsv.tif", rgb)
    with rasterio.open(tmp_path / "hsv.tif", "r+") as ds:
        ds.colorinterp = [ColorInterp.hue, ColorInterp.saturation, ColorInterp.lightness]
    with pytest.raises(MsafError, match=r"bands 1-3 are hue, saturation, lightness, not red, green and blue"):
        open_source(tmp_path / "hsv.tif", ScalingConfig())
    write_raster(tmp_path / "palette.tif", rgb[:1].repeat(3, axis=0))
    with rasterio.open(tmp_path / "palette.tif", "r+") as ds:
        ds.colorinterp = [ColorInterp.palette, ColorInterp.undefined, ColorInterp.undefined]
    with pytest.raises(MsafError, match=r"a paletted image \(colour table\); .*gdal_translate -expand rgb"):
        open_source(tmp_path / "palette.tif", ScalingConfig())


def test_a_vrt_source_rewritten_in_place_with_its_mtime_restored_changes_the_fingerprint(tmp_path):
    """The 24-item-6 case: same size, mtime put back; the change time still moves, so stale blocks are not reused."""
    import os
    import time

    from pipeline.raster.trust import vrt_fingerprint_parts

    source = write_raster(tmp_path / "src.tif", _pixels(1))
    vrt = _vrt(tmp_path / "m.vrt", _simple_bands("src.tif"))
    before = vrt_fingerprint_parts(vrt, allow_remote=False)
    stat = source.stat()
    time.sleep(0.01)
    with rasterio.open(source, "r+") as ds:  # another picture, written in place: same size
        ds.write(_pixels(2))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    assert vrt_fingerprint_parts(vrt, allow_remote=False) != before
