"""Which raster locations a survey may read: untrusted inputs stay in their box.

An orthomosaic arrives from a drone contractor or a shared inbox, so it is untrusted. GDAL can do
far more than decode pixels: a VRT can point at any local file (a ``VRTRawRasterBand`` reads raw
bytes of ``/etc/passwd`` as an image), at network sources (``/vsicurl/``) or run pixel functions.
By default only ordinary local raster files are read; VRTs need ``allow_vrt`` and GDAL virtual
file systems or URLs need ``allow_remote``. Even an allowed VRT may not use raw or derived bands.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import MsafError

# Defence in depth: GDAL refuses raw bands and Python pixel functions even if a check is missed.
os.environ.setdefault("GDAL_VRT_ENABLE_RAWRASTERBAND", "NO")
os.environ.setdefault("GDAL_VRT_ENABLE_PYTHON", "NO")

URL_PREFIXES = {
    "http://": "/vsicurl/",
    "https://": "/vsicurl/",
    "s3://": "/vsis3/",
    "gs://": "/vsigs/",
    "az://": "/vsiaz/",
}
VIRTUAL = re.compile(r"^/vsi[a-z0-9_]+/|^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
FORBIDDEN_BAND_KINDS = {"VRTRawRasterBand", "VRTDerivedRasterBand"}
MAX_VRT_DEPTH = 4
# GDAL opens a file by its content, whatever its name: a GDAL_WMS XML saved as wms.tif fetches
# from the network, an MRF XML reads the bytes of any DataFile. So every input is opened with the
# one driver its first bytes name, from this list; anything else is refused before GDAL sees it.
MAGIC_DRIVERS = (
    (b"II*\x00", "GTiff"),
    (b"MM\x00*", "GTiff"),
    (b"II+\x00", "GTiff"),  # BigTIFF
    (b"MM\x00+", "GTiff"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\x00\x00\x00\x0cjP  ", "JP2OpenJPEG"),
    (b"\xffO\xffQ", "JP2OpenJPEG"),  # raw JPEG 2000 codestream
)
FORMATS = "GeoTIFF/COG, JPEG, PNG or JPEG 2000"


def driver_for(text: str, kind: str) -> str:
    """The one GDAL driver that may open this location: by its first bytes for a local file
    (a VRT's XML only where VRTs are allowed), GeoTIFF for a remote one (a COG)."""
    if kind == "remote":
        return "GTiff"
    try:
        with open(text, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise MsafError(f"{text}: cannot read ({exc.strerror})") from None
    for magic, driver in MAGIC_DRIVERS:
        if head.startswith(magic):
            return driver
    if kind == "vrt" and head.lstrip().startswith(b"<VRTDataset"):
        return "VRT"
    raise MsafError(
        f"{text}: not a {FORMATS} raster by its content; other GDAL formats (such as WMS or MRF XML, which "
        "fetch from the network or read other files) are refused whatever the file's name"
    )


@dataclass(frozen=True)
class RasterLocation:
    """Where a raster lives: a local path, or a GDAL virtual/network path (kept as text, never a Path)."""

    text: str
    kind: str  # "file", "vrt" or "remote"

    @property
    def local(self) -> Path | None:
        """The local path, or None for a remote or virtual-file-system input."""
        return None if self.kind == "remote" else Path(self.text)

    @property
    def name(self) -> str:
        """The last part of the path or URL (for messages)."""
        return self.text.rstrip("/").rsplit("/", 1)[-1]


def is_virtual(text: str) -> bool:
    """A GDAL virtual file system path (``/vsicurl/...``) or a URL."""
    return bool(VIRTUAL.match(text))


def gdal_path(text: str) -> str:
    """``https://...`` -> ``/vsicurl/https://...``, ``s3://b/k`` -> ``/vsis3/b/k``; other text unchanged."""
    for prefix, vsi in URL_PREFIXES.items():
        if text.lower().startswith(prefix):
            return vsi + (text if vsi == "/vsicurl/" else text[len(prefix) :])
    return text


def _looks_like_vrt(path: Path) -> bool:
    """By content, not name: GDAL sniffs, so a VRT renamed to .tif is still a VRT."""
    if path.suffix.lower() == ".vrt":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except OSError:
        return False
    return b"<VRTDataset" in head


def vrt_sources(path: Path, allow_remote: bool, depth: int = 0) -> list[Path]:
    """Every local file a VRT reads (recursively); refuses raw/derived bands and, unless allowed, remote sources."""
    if depth > MAX_VRT_DEPTH:
        raise MsafError(f"{path}: VRTs nested deeper than {MAX_VRT_DEPTH}; flatten it with gdal_translate")
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise MsafError(f"{path}: not a readable VRT ({exc})") from None
    for band in root.iter("VRTRasterBand"):
        kind = band.get("subClass")
        if kind in FORBIDDEN_BAND_KINDS:
            raise MsafError(
                f"{path}: VRT band of kind {kind} is not read (it can expose arbitrary file bytes or "
                "run code); make a GeoTIFF with gdal_translate from a trusted source instead"
            )
    if next(root.iter("PixelFunctionCode"), None) is not None:
        raise MsafError(f"{path}: VRT with embedded pixel-function code is not read")
    sources = []
    for element in (*root.iter("SourceFilename"), *root.iter("SourceDataset")):
        text = (element.text or "").strip()
        if not text:
            continue
        if is_virtual(text):
            if not allow_remote:
                raise MsafError(
                    f"{path}: VRT source {text[:80]} is a network or virtual file; pass --allow-remote to read it"
                )
            continue
        source = Path(text)
        if element.get("relativeToVRT") == "1" or not source.is_absolute():
            source = path.parent / source
        source = source.resolve()
        if _looks_like_vrt(source):
            sources += [source, *vrt_sources(source, allow_remote, depth + 1)]
        else:
            sources.append(source)
    return sources


def locate(text: str | os.PathLike[str], *, allow_vrt: bool = False, allow_remote: bool = False) -> RasterLocation:
    """Check a raster location against the input policy; every refusal says how to allow or fix it."""
    text = os.fspath(text)
    if is_virtual(text):
        if not allow_remote:
            raise MsafError(
                f"{text[:100]}: network and GDAL virtual-file inputs are not read by default; pass "
                "--allow-remote (or survey.allow_remote: true) if you trust the source"
            )
        return RasterLocation(gdal_path(text), "remote")
    path = Path(text)
    if not path.exists():
        raise MsafError(f"input not found: {path}")
    if not path.is_file():
        raise MsafError(f"{path}: not a regular file; expected a GeoTIFF/COG orthomosaic")
    if _looks_like_vrt(path):
        if not allow_vrt:
            raise MsafError(
                f"{path}: VRT inputs are not read by default (a VRT can point at any file); pass "
                "--allow-vrt if you trust it, or make a GeoTIFF with gdal_translate"
            )
        vrt_sources(path, allow_remote)
        return RasterLocation(text, "vrt")
    return RasterLocation(text, "file")


def vrt_fingerprint_parts(path: Path, allow_remote: bool) -> list[str]:
    """What identifies a VRT's pixels without reading them: its sources' paths, sizes, modification
    and change times (ctime: set by the kernel on every write, so a source rewritten in place with
    its mtime put back still counts as changed)."""
    parts = []
    for source in vrt_sources(path, allow_remote):
        try:
            stat = source.stat()
        except OSError:
            raise MsafError(f"{path}: VRT source {source} is missing") from None
        parts.append(f"{source}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}")
    return parts
