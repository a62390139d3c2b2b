"""Open and validate an orthomosaic, then read RGB + validity for any window, thread-safely.

Input rules (documented in the README):
* Only what ``pipeline.raster.trust`` lets through is opened (ordinary local files by default).
* North-up georeferencing: a geotransform without rotation or skew (others are refused with the
  ``gdalwarp`` line that fixes them), not GCPs alone.
* 3 bands = RGB; 4 bands = RGB + alpha (the footprint). Other band counts are refused.
* The footprint (valid pixels) is GDAL's dataset mask: alpha band, declared nodata or an internal
  mask, whichever the file has (``SourceInfo.footprint`` says which). A file with none has it painted
  in; ``pipeline.raster.collar`` finds that fill.
* uint8 is used as is. Other types are scaled to 8 bit per band, linearly: by default from 0 to the
  data's bit depth (``NBITS`` metadata, else the smallest of 8, 10, 12, 14 or 16 bits that holds
  the largest value; [0, 1] for floats within it), so a linearly rescaled copy of an 8-bit
  orthomosaic gives the same picture. A percentile stretch or an explicit range are options.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import CRSError, RasterioError, RasterioIOError

from pipeline.config import ScalingConfig
from pipeline.errors import MsafError
from pipeline.fingerprint import file_fingerprint
from pipeline.raster.buffers import BufferPool
from pipeline.raster.grid import Box
from pipeline.raster.ground import ground_sample_distance
from pipeline.raster.trust import RasterLocation, driver_for, locate, vrt_fingerprint_parts, vrt_sources

BIT_DEPTHS = (8, 10, 12, 14, 16, 32)
Footprint = Literal["alpha", "nodata", "mask", "none"]  # how a file marks its valid pixels


class RasterSource(Protocol):
    """One kind of raster input (a file, a VRT, a remote COG): how it opens, what identifies its
    pixels and which local files it reads. A new kind is a class here plus its name in ``KINDS``."""

    @property
    def location(self) -> RasterLocation:
        """Where it lives (kind and text)."""
        ...

    def open(self) -> rasterio.DatasetReader:
        """The dataset, opened with the one driver the input policy allows for it."""
        ...

    def fingerprint(self, width: int, height: int, transform: Any) -> str:
        """What identifies the pixels a survey reads (a resumed survey never reuses stale blocks)."""
        ...

    def local_files(self) -> list[Path]:
        """Every local file it reads: what a survey or report must never overwrite."""
        ...


@dataclass(frozen=True)
class FileSource:
    """A local raster file (GeoTIFF/COG, JPEG, PNG, JPEG 2000 by its content)."""

    location: RasterLocation

    def open(self) -> rasterio.DatasetReader:
        """Opened with the driver its first bytes name."""
        return rasterio.open(self.location.text, driver=driver_for(self.location.text, "file"))

    def fingerprint(self, width: int, height: int, transform: Any) -> str:
        """Its bytes."""
        return file_fingerprint(self.location.text)

    def local_files(self) -> list[Path]:
        """The file."""
        return [Path(self.location.text)]


def _identity(location: RasterLocation, width: int, height: int, transform: Any) -> Any:
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{location.kind}|{location.text}|{width}x{height}|{list(transform)}".encode())
    return digest


@dataclass(frozen=True)
class VrtSource:
    """A VRT (allowed with --allow-vrt) and the local files it reads."""

    location: RasterLocation

    def open(self) -> rasterio.DatasetReader:
        """Opened as a VRT (its sources were checked by the input policy)."""
        return rasterio.open(self.location.text, driver=driver_for(self.location.text, "vrt"))

    def fingerprint(self, width: int, height: int, transform: Any) -> str:
        """Its bytes plus the path, size and change time of every file it reads (hashing the
        sources themselves could mean terabytes)."""
        digest = _identity(self.location, width, height, transform)
        digest.update(file_fingerprint(self.location.text).encode())
        for part in vrt_fingerprint_parts(Path(self.location.text), allow_remote=True):
            digest.update(part.encode())
        return str(digest.hexdigest())

    def local_files(self) -> list[Path]:
        """The VRT and every local file it reads, recursively."""
        path = Path(self.location.text)
        return [path, *vrt_sources(path, allow_remote=True)]


@dataclass(frozen=True)
class RemoteSource:
    """A URL or GDAL virtual file system path (allowed with --allow-remote), read as a COG."""

    location: RasterLocation

    def open(self) -> rasterio.DatasetReader:
        """Opened as a GeoTIFF/COG."""
        return rasterio.open(self.location.text, driver=driver_for(self.location.text, "remote"))

    def fingerprint(self, width: int, height: int, transform: Any) -> str:
        """Its location, shape, georeference and a decimated read of its pixels."""
        digest = _identity(self.location, width, height, transform)
        with self.open() as ds:
            digest.update(_sample(ds)[0].tobytes())
        return str(digest.hexdigest())

    def local_files(self) -> list[Path]:
        """None."""
        return []


KINDS: dict[str, type[FileSource] | type[VrtSource] | type[RemoteSource]] = {
    "file": FileSource,
    "vrt": VrtSource,
    "remote": RemoteSource,
}


def source_for(location: RasterLocation) -> RasterSource:
    """The source of a location the input policy accepted (``trust.locate``)."""
    return KINDS[location.kind](location)


@dataclass(frozen=True)
class SourceInfo:
    """What the survey needs to know about an input raster (and records in survey.json)."""

    location: RasterLocation
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS
    crs_assumed: bool
    transform: Any
    nodata: float | None
    has_alpha: bool
    compression: str | None
    block_shapes: tuple[int, int]
    gsd_m: float
    scale: tuple[tuple[float, float], ...] | None = field(default=None)
    bands: tuple[int, int, int] = (1, 2, 3)  # the band numbers of red, green and blue
    footprint: Footprint = "none"  # how the file declares its valid pixels (GDAL's mask flags)

    @property
    def path(self) -> str:
        """What GDAL opens (a local path or a /vsi... path; never normalised, which would mangle URLs)."""
        return self.location.text

    @property
    def source(self) -> RasterSource:
        """How this input opens, what identifies it, which local files it reads."""
        return source_for(self.location)

    @property
    def name(self) -> str:
        """The input's file name (or URL's last part) for messages and reports."""
        return self.location.name

    def describe(self) -> dict[str, Any]:
        """The JSON description recorded in survey.json (``InputRecord``)."""
        return {
            "path": self.path,
            "kind": self.location.kind,
            "width": self.width,
            "height": self.height,
            "bands": self.count,
            "dtype": self.dtype,
            "crs": self.crs.to_string(),
            "crs_assumed": self.crs_assumed,
            "transform": list(self.transform)[:6],
            "nodata": self.nodata,
            "alpha": self.has_alpha,
            "footprint": self.footprint,
            "compression": self.compression,
            "block_shape": list(self.block_shapes),
            "gsd_m": self.gsd_m,
            "scaling": [list(s) for s in self.scale] if self.scale else None,
            "megapixels": self.width * self.height / 1e6,
        }


RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


def declared_footprint(ds: rasterio.DatasetReader) -> Footprint:
    """How a file marks its valid pixels: an alpha band, a nodata value, an internal or side-car mask,
    or not at all (every pixel valid to GDAL, whatever fill the writer painted outside the ground)."""
    flags = set(ds.mask_flag_enums[0])
    if MaskFlags.alpha in flags:
        return "alpha"
    if MaskFlags.nodata in flags:
        return "nodata"
    return "none" if MaskFlags.all_valid in flags else "mask"


UNNAMED = (ColorInterp.undefined, ColorInterp.gray)  # what writers that set no colour interpretation leave


def rgb_bands(ds: rasterio.DatasetReader) -> tuple[int, int, int]:
    """The band numbers of red, green and blue: (1, 2, 3) unless the file names them otherwise (a BGR
    file gives (3, 2, 1)); a paletted file or bands named as something else are one line."""
    named = list(ds.colorinterp[:3])
    if ColorInterp.palette in ds.colorinterp:
        raise MsafError(
            f"{ds.name}: a paletted image (colour table); expand it to RGB first: "
            "gdal_translate -expand rgb in.tif out.tif"
        )
    if set(named) == set(RGB):
        red, green, blue = (named.index(colour) + 1 for colour in RGB)
        return red, green, blue
    if all(colour in UNNAMED for colour in named):
        return 1, 2, 3
    raise MsafError(
        f"{ds.name}: bands 1-3 are {', '.join(c.name for c in named)}, not red, green and blue; "
        "write them as RGB (e.g. gdal_translate -b 1 -b 2 -b 3 -colorinterp red,green,blue)"
    )


def orthomosaic_bands(ds: rasterio.DatasetReader, name: str) -> tuple[int, int, int]:
    """The red, green and blue band numbers of an orthomosaic, which has 3 bands (RGB) or 4 (RGB +
    alpha); anything else (a grey or multispectral image, a fourth band that is not alpha) is one line."""
    if ds.count not in (3, 4):
        raise MsafError(f"{name}: {ds.count} band(s); expected 3 (RGB) or 4 (RGB + alpha)")
    if ds.count == 4 and ds.colorinterp[3] not in (ColorInterp.alpha, ColorInterp.undefined):
        raise MsafError(f"{name}: band 4 is {ds.colorinterp[3].name}, not alpha; expected RGB or RGBA")
    return rgb_bands(ds)


def _percentile_scale(ds: rasterio.DatasetReader, low: float, high: float) -> tuple[tuple[float, float], ...]:
    """Per-band (lo, hi) from a decimated read (at most ~1024 px a side) of valid pixels."""
    data, valid = _sample(ds)
    data = data.astype(np.float64)
    if not valid.any():
        raise MsafError(f"{ds.name}: no valid pixels to compute a stretch from; pass an explicit range")
    out = []
    for band in data:
        lo, hi = np.percentile(band[valid], [low, high])
        out.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return tuple(out)


def _sample(ds: rasterio.DatasetReader) -> tuple[np.ndarray, np.ndarray]:
    """RGB of a decimated read (at most ~1024 px a side) and its validity: bounded memory."""
    step = max(1, math.ceil(max(ds.width, ds.height) / 1024))
    shape = (max(1, ds.height // step), max(1, ds.width // step))
    data = ds.read(rgb_bands(ds), out_shape=(3, *shape), resampling=rasterio.enums.Resampling.nearest)
    valid = ds.dataset_mask(out_shape=shape) > 0
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    return data, valid


_FILE_SCALES: dict[tuple[str, float], tuple[tuple[float, float], ...]] = {}


def file_bit_depth_scale(ds: rasterio.DatasetReader) -> tuple[tuple[float, float], ...]:
    """``bit_depth_scale`` of a local file, once per file version: a report's pictures and its
    exposure check both read the orthomosaic on the survey's 8-bit scale."""
    key = (ds.name, Path(ds.name).stat().st_mtime)
    if key not in _FILE_SCALES:
        _FILE_SCALES[key] = bit_depth_scale(ds)
    return _FILE_SCALES[key]


def on_survey_scale(ds: rasterio.DatasetReader, data: np.ndarray) -> np.ndarray:
    """Pixels read from a local file on the 8-bit scale the survey saw: as read when 8-bit, else
    stretched by the file's bit depth (``file_bit_depth_scale``). The report's pictures, its exposure
    and blur checks and the epochs' registration all read the orthomosaic this way."""
    return data if data.dtype == np.uint8 else to_uint8(data, file_bit_depth_scale(ds))


def bit_depth_scale(ds: rasterio.DatasetReader) -> tuple[tuple[float, float], ...]:
    """[0, 2^bits - 1] from NBITS metadata or the data's top (99.99th percentile); [0, 1] for floats within it.

    Linear and anchored at zero, so an 8-bit picture stored as x16 (12 bit) or x257 (16 bit) maps
    back onto (nearly) the same 8-bit values, and contrast is never stretched.
    """
    nbits = ds.tags(1, "IMAGE_STRUCTURE").get("NBITS")
    if nbits and nbits.isdigit() and 8 <= int(nbits) <= 32:
        return ((0.0, float(2 ** int(nbits) - 1)),) * 3
    data, valid = _sample(ds)
    if not valid.any():
        raise MsafError(f"{ds.name}: no valid pixels to derive a bit depth from; set survey.scaling to a range")
    # a high percentile, not the maximum: a few hot or saturated pixels of a 12-bit sensor must not
    # make it "16-bit" (the picture 16x darker); at most 0.01 % of the sample clips
    top = float(np.percentile(data[:, valid], 99.99))
    if np.issubdtype(data.dtype, np.floating) and top <= 1.0:
        return ((0.0, 1.0),) * 3
    bits = next((b for b in BIT_DEPTHS if top < 2**b), BIT_DEPTHS[-1])
    return ((0.0, float(2**bits - 1)),) * 3


def _check_readable_tail(ds: rasterio.DatasetReader) -> None:
    """Read the last block: a truncated file fails here, before any work is done."""
    rows, cols = ds.block_shapes[0]
    window = rasterio.windows.Window(
        max(0, ds.width - cols), max(0, ds.height - rows), min(cols, ds.width), min(rows, ds.height)
    )
    ds.read(1, window=window)


def _check_georeferencing(name: str, ds: rasterio.DatasetReader) -> None:
    """North-up affine only: rotation or skew would make every pixel size and area wrong."""
    transform = ds.transform
    if transform.is_identity:
        if ds.gcps[0]:
            raise MsafError(
                f"{name}: georeferenced by ground control points only; warp it to a north-up grid first: "
                "gdalwarp -r bilinear -t_srs EPSG:XXXX in.tif out.tif"
            )
        raise MsafError(
            f"{name}: no geotransform (pixel positions on the ground are unknown); deliver a "
            "georeferenced GeoTIFF (--assume-crs only names the CRS of a georeferenced file)"
        )
    if transform.b != 0 or transform.d != 0:
        raise MsafError(
            f"{name}: rotated or skewed geotransform (b={transform.b:g}, d={transform.d:g}); pixel sizes "
            "and areas would be wrong - make it north-up first: gdalwarp -r bilinear in.tif out.tif"
        )


def _check_north_up(name: str, transform: Any) -> None:
    """Pixel x must grow east and pixel y south: a south-up or mirrored grid would flip every map."""
    if transform.a <= 0 or transform.e >= 0:
        raise MsafError(
            f"{name}: the grid is {'mirrored east-west' if transform.a <= 0 else 'south-up'} (pixel size x "
            f"{transform.a:g}, y {transform.e:g}; north-up has x > 0 and y < 0) - make it north-up first: "
            "gdalwarp in.tif out.tif"
        )


def open_source(
    path: str | Path,
    scaling: ScalingConfig,
    assume_crs: str | None = None,
    *,
    allow_vrt: bool = False,
    allow_remote: bool = False,
) -> SourceInfo:
    """Validate an orthomosaic; every expected problem is one MsafError saying what to do."""
    location = locate(path, allow_vrt=allow_vrt, allow_remote=allow_remote)
    name = location.text
    try:
        ds_cm = source_for(location).open()
    except RasterioIOError as exc:
        reason = str(exc).replace(name, "").strip(" :")[:100]
        raise MsafError(
            f"{name}: cannot open as a raster ({reason}); expected a complete GeoTIFF/COG "
            "orthomosaic - is it truncated or another kind of file?"
        ) from None
    with ds_cm as ds:
        try:
            _check_readable_tail(ds)
        except RasterioError as exc:
            raise MsafError(
                f"{name}: cannot read pixel data ({str(exc).splitlines()[0][:120]}); "
                "the file looks truncated or corrupt"
            ) from None
        crs, assumed = ds.crs, False
        if crs is None:
            if not assume_crs:
                raise MsafError(f"{name}: raster has no CRS; georeference it or pass --assume-crs EPSG:XXXX")
            try:
                crs, assumed = CRS.from_user_input(assume_crs), True
            except CRSError:
                raise MsafError(f"--assume-crs {assume_crs!r} is not a CRS rasterio understands") from None
        _check_georeferencing(name, ds)
        _check_north_up(name, ds.transform)
        bands = orthomosaic_bands(ds, name)
        has_alpha = ds.count == 4
        if len(set(ds.dtypes)) != 1:
            raise MsafError(f"{name}: bands have mixed data types {ds.dtypes}")
        dtype = ds.dtypes[0]
        scale: tuple[tuple[float, float], ...] | None = None
        if dtype != "uint8":
            if scaling.mode == "range":
                scale = ((scaling.min, scaling.max),) * 3
            elif scaling.mode == "percentile":
                scale = _percentile_scale(ds, scaling.low, scaling.high)
            else:
                scale = bit_depth_scale(ds)
        return SourceInfo(
            location=location,
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=dtype,
            crs=crs,
            crs_assumed=assumed,
            transform=ds.transform,
            nodata=ds.nodata,
            has_alpha=has_alpha,
            bands=bands,
            footprint=declared_footprint(ds),
            compression=ds.compression.value if ds.compression else None,
            block_shapes=tuple(ds.block_shapes[0]),
            gsd_m=ground_sample_distance(crs, ds.transform, ds.width, ds.height),
            scale=scale,
        )


def to_uint8(data: np.ndarray, scale: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Linear per-band stretch of (3, H, W) data to uint8 with clipping (NaN -> 0)."""
    out = np.empty(data.shape, dtype=np.uint8)
    for band, (lo, hi) in enumerate(scale):
        scaled = (data[band].astype(np.float32) - lo) * (255.0 / (hi - lo))
        out[band] = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).round().astype(np.uint8)
    return out


def read_failed(info: SourceInfo, row0: int, row1: int, col0: int, col1: int, exc: Exception) -> MsafError:
    """The one line for a window GDAL could not decode (a truncated or corrupt file)."""
    return MsafError(
        f"{info.path}: read failed at rows {row0}-{row1}, cols {col0}-{col1} "
        f"({str(exc).splitlines()[0][:100]}); file truncated or corrupt?"
    )


class DatasetPerThread:
    """The source opened once in each thread that reads it (a GDAL handle is not for two threads at
    once, and keeps its own block cache); every handle closed together."""

    def __init__(self, source: RasterSource) -> None:
        self.source = source
        self._local = threading.local()
        self._lock = threading.Lock()
        self._handles: list[rasterio.DatasetReader] = []

    def get(self) -> rasterio.DatasetReader:
        """This thread's handle, opened on its first read."""
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = self.source.open()
            self._local.ds = ds
            with self._lock:
                self._handles.append(ds)
        return ds

    def close(self) -> None:
        """Close every thread's handle."""
        with self._lock:
            for ds in self._handles:
                ds.close()
            self._handles.clear()


class BlockReader:
    """Reads windows as (RGB uint8 (3, H, W), valid bool (H, W)): band-sequential, as GDAL decodes
    and the network takes them, so no pixel is interleaved and de-interleaved on the way.

    A window is split into row strips aligned to the file's internal blocks and decoded by a pool
    of threads (GDAL releases the GIL), each with its own dataset handle; every source block is
    decoded once per read and the strips land directly in one output array. A strip's rows always
    go to the same thread: the source blocks a block's halo shares with its left neighbour were
    decoded by that thread's handle for the neighbour and come from GDAL's block cache, which is
    per handle (a 16384² survey's decoding took 11-15 % less CPU; the halo alone needs only 64 px
    of each 512² source block it touches, and decoded every such block again). The block below in
    the same column comes a whole row of blocks later, long out of that cache: so a read told which
    box comes next below it (``keep_for``) keeps the rows that box's first, partial strip would
    decode a whole row of source blocks for, and that box starts from them.

    Args:
        info: the validated source.
        threads: decoding threads.
        largest: the most pixels a read will ask for (0: not known): every buffer is made that
            large, so any block fits any buffer given back, and a raster's edge blocks (smaller)
            do not leave buffers too small for the inner ones.
    """

    KEPT_BANDS = 32  # bands waiting for the box below (~1 MB each for 4096-px blocks; rasters up to 131k px wide)

    def __init__(self, info: SourceInfo, threads: int = 4, largest: int = 0) -> None:
        self.info = info
        self._datasets = DatasetPerThread(info.source)
        self._lock = threading.Lock()
        self._pools = [ThreadPoolExecutor(1, thread_name_prefix=f"decode{i}") for i in range(max(1, threads))]
        block_rows = max(1, info.block_shapes[0])
        self.strip_rows = block_rows * max(1, math.ceil(256 / block_rows))
        self._bands: OrderedDict[Box, tuple[np.ndarray, np.ndarray]] = OrderedDict()  # kept rows, by the box they start
        self._buffers = BufferPool(smallest=4 * largest)  # 4 bytes a pixel: RGB and the footprint

    def _read_strip(self, box: Box, pixels: np.ndarray, valid: np.ndarray, row0: int, row1: int) -> None:
        ds = self._datasets.get()
        window = rasterio.windows.Window(box.col0, row0, box.width, row1 - row0)
        rows = slice(row0 - box.row0, row1 - box.row0)
        scale = self.info.scale  # None: 8-bit RGB, decoded straight into the block's array
        strip_valid = valid[rows]
        try:
            data = ds.read(self.info.bands, window=window, out=pixels[:, rows] if scale is None else None)
            # GDAL's 0/255 mask into the footprint's own bytes, then made 0/1 there (rasterio returns a
            # new array instead for a nodata value's mask: that is taken the same way)
            mask = ds.dataset_mask(window=window, out=strip_valid.view(np.uint8))
            np.greater(mask, 0, out=strip_valid)
        except RasterioError as exc:
            raise read_failed(self.info, row0, row1, box.col0, box.col1, exc) from None
        if scale is not None:
            if np.issubdtype(data.dtype, np.floating):
                strip_valid &= np.isfinite(data).all(axis=0)
            pixels[:, rows] = to_uint8(data, scale)

    def read(self, box: Box, keep_for: Box | None = None) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (3, H, W) of ``box`` and its footprint (True = valid data); ``keep_for``: the box
        read next below this one in the same columns, whose top rows this one holds. Both arrays
        share one buffer, which ``release`` gives back for a later read."""
        pixels, valid = self._arrays(box.height, box.width)
        start = box.row0
        with self._lock:
            kept = self._bands.pop(box, None)
        if kept is not None:  # the rows above this box's first strip edge, from the box above
            rows = kept[1].shape[0]
            pixels[:, :rows], valid[:rows] = kept
            start += rows
        # strip edges on multiples of the file's block rows, so no source block is decoded twice
        edges = [start, *range((start // self.strip_rows + 1) * self.strip_rows, box.row1, self.strip_rows), box.row1]
        futures = [
            self._pools[r0 // self.strip_rows % len(self._pools)].submit(self._read_strip, box, pixels, valid, r0, r1)
            for r0, r1 in itertools.pairwise(edges)
            if r1 > r0
        ]
        for future in futures:
            future.result()
        if keep_for is not None:
            self._keep(box, pixels, valid, keep_for)
        return pixels, valid

    def _arrays(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (3, h, w) and footprint (h, w) cut from one buffer of the pool."""
        pixel_count = height * width
        buffer = self._buffers.take(4 * pixel_count)
        pixels = buffer[: 3 * pixel_count].reshape(3, height, width)
        return pixels, buffer[3 * pixel_count :].view(bool).reshape(height, width)

    def nothing(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Arrays for ``box`` with no valid pixel, read from nothing (a block outside the area of
        interest); its pixels are left as the buffer had them. ``release`` gives them back."""
        pixels, valid = self._arrays(box.height, box.width)
        valid[:] = False
        return pixels, valid

    def release(self, pixels: np.ndarray) -> None:
        """Give the buffer of a read's arrays back for a later read; neither array may be used after."""
        self._buffers.give_back(pixels)

    def _keep(self, box: Box, pixels: np.ndarray, valid: np.ndarray, below: Box) -> None:
        """Hold the rows of ``box`` that ``below`` would decode as a partial first strip."""
        stop = min(-(-below.row0 // self.strip_rows) * self.strip_rows, box.row1)
        if (below.col0, below.col1) != (box.col0, box.col1) or not box.row0 <= below.row0 < stop <= below.row1:
            return  # other columns, not overlapping, or starting on a strip edge: nothing to save
        rows = slice(below.row0 - box.row0, stop - box.row0)
        with self._lock:
            self._bands[below] = (pixels[:, rows].copy(), valid[rows].copy())
            while len(self._bands) > self.KEPT_BANDS:  # memory stays flat however wide the raster
                self._bands.popitem(last=False)

    def close(self) -> None:
        """Close the dataset of every reader thread."""
        for pool in self._pools:
            pool.shutdown(wait=True)
        self._datasets.close()


def source_fingerprint(info: SourceInfo) -> str:
    """What identifies the pixels a survey reads (see each kind's ``fingerprint``)."""
    return info.source.fingerprint(info.width, info.height, info.transform)
