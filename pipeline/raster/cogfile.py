"""Lay out a Cloud-Optimized GeoTIFF from tiles that are already compressed.

GDAL's COG driver only copies from a finished dataset, so a survey used to compress each layer
three times (block store, working GeoTIFF, COG) and decode it twice. Here each 512 px tile is
DEFLATE-compressed once, as soon as the blocks covering it are written, and the file is laid out at
the end the way GDAL's COG driver lays it out: the TIFF header, GDAL's structural metadata ("ghost
area": IFDs before data, tiles in row-major order, each with its size before it and its last 4
bytes repeated after it), the IFDs of the full resolution and the overviews with their values, then
the tile data of the smallest overview first and the full resolution last. GDAL reports such a file
as ``LAYOUT=COG``. The georeferencing and metadata tags are GDAL's own: copied from a one-pixel
GeoTIFF that GDAL writes with the same CRS, transform, nodata, tags and band description.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np
import tifffile
from rasterio.crs import CRS
from rasterio.io import MemoryFile

_deflate_lib: ModuleType
try:  # ISA-L's DEFLATE: 4x zlib's speed at level 1 on a confidence layer, smaller output; plain zlib streams
    from isal import isal_zlib as _deflate_lib
except ImportError:  # pragma: no cover - a platform without the isal wheel: zlib writes the same format
    _deflate_lib = zlib

TILE = 512
GHOST_BODY = (
    "LAYOUT=IFDS_BEFORE_DATA\n"
    "BLOCK_ORDER=ROW_MAJOR\n"
    "BLOCK_LEADER=SIZE_AS_UINT4\n"
    "BLOCK_TRAILER=LAST_4_BYTES_REPEATED\n"
    "KNOWN_INCOMPATIBLE_EDITION=NO\n "  # the space lets GDAL turn NO into YES in place
)
GHOST = f"GDAL_STRUCTURAL_METADATA_SIZE={len(GHOST_BODY):06d} bytes\n{GHOST_BODY}".encode("ascii")
CLASSIC_LIMIT = 2**32 - 2**26  # past this many bytes the file is BigTIFF (with room for the IFDs)
GDAL_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42112)  # scale, tiepoint, transform, GeoKeys, metadata
NODATA_TAG = 42113
SHORT, LONG, LONG8 = 3, 4, 16
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}


def deflate(data: bytes) -> bytes:
    """A TIFF DEFLATE (zlib) tile at the fastest level."""
    return _deflate_lib.compress(data, 1)


def framed(payload: bytes) -> bytes:
    """A tile as a COG stores it: its size before it, its last 4 bytes repeated after it."""
    return struct.pack("<I", len(payload)) + payload + payload[-4:]


@dataclass(frozen=True)
class Field:
    """One IFD entry: tag, TIFF type, count and the little-endian bytes of its values."""

    tag: int
    type: int
    count: int
    data: bytes


def _numbers(tag: int, kind: int, values: Any) -> Field:
    array = np.asarray(values, dtype={SHORT: "<u2", LONG: "<u4", LONG8: "<u8"}[kind]).ravel()
    return Field(tag, kind, int(array.size), array.tobytes())


def gdal_fields(
    crs: CRS | None, transform: Any, nodata: int, tags: dict[str, str], description: str | None
) -> tuple[list[Field], Field | None]:
    """The georeferencing and GDAL metadata fields GDAL writes for these properties (of the full
    resolution), and its nodata field (of every level): read from a one-pixel GeoTIFF it writes."""
    profile = {"driver": "GTiff", "width": 1, "height": 1, "count": 1, "dtype": "uint8", "BIGTIFF": "NO"}
    with MemoryFile() as memory:
        with memory.open(**profile, crs=crs, transform=transform, nodata=nodata) as dataset:
            if tags:
                dataset.update_tags(**tags)
            if description:
                dataset.set_band_description(1, description)
        raw = memory.read()
    fields: list[Field] = []
    nodata_field = None
    with tifffile.TiffFile(BytesIO(raw)) as tif:
        for tag in tif.pages[0].tags.values():  # type: ignore[union-attr]
            if tag.code in GDAL_TAGS or tag.code == NODATA_TAG:
                value = raw[tag.valueoffset : tag.valueoffset + tag.count * TYPE_SIZES[tag.dtype]]
                field = Field(tag.code, int(tag.dtype), tag.count, value)
                if tag.code == NODATA_TAG:
                    nodata_field = field
                else:
                    fields.append(field)
    return fields, nodata_field


@dataclass
class LevelTiles:
    """One resolution's tiles: where each framed tile lies in a spool file, written in any order."""

    width: int
    height: int
    spool: Path

    def __post_init__(self) -> None:
        self.across = -(-self.width // TILE)
        count = self.across * -(-self.height // TILE)
        self.offsets = np.full(count, -1, np.int64)  # of the framed tile in the spool
        self.sizes = np.zeros(count, np.int64)  # compressed bytes, without the frame
        self._file: BinaryIO = open(self.spool, "wb")  # noqa: SIM115 - closed by close()

    def add(self, index: int, payload: bytes) -> None:
        """Append one compressed tile."""
        self.offsets[index] = self._file.tell()
        self.sizes[index] = len(payload)
        self._file.write(framed(payload))

    def close(self) -> None:
        """Finish writing the spool."""
        if not self._file.closed:
            self._file.close()

    def framed_tiles(self, missing: bytes) -> Iterator[bytes]:
        """The framed tiles in row-major order; ``missing`` (compressed) for any never written."""
        with open(self.spool, "rb") as spool:
            for offset, size in zip(self.offsets.tolist(), self.sizes.tolist(), strict=True):
                if offset < 0:
                    yield framed(missing)
                    continue
                spool.seek(offset)
                yield spool.read(size + 8)


def write_cog(
    path: Path, levels: list[LevelTiles], fields: list[Field], nodata_field: Field | None, missing: bytes
) -> None:
    """Write the COG: header, ghost area, every level's IFD and values, then the tile data (smallest
    overview first). ``levels`` starts with the full resolution; its spools must be complete."""
    sizes = [np.where(level.offsets < 0, len(missing), level.sizes) for level in levels]
    data_bytes = int(sum(int(s.sum()) + 8 * s.size for s in sizes))
    big = data_bytes + 2**20 * len(levels) > CLASSIC_LIMIT
    offset_type = LONG8 if big else LONG
    header_size = 16 if big else 8

    def ifd_fields(index: int, level: LevelTiles, tile_offsets: np.ndarray) -> list[Field]:
        entries = [
            _numbers(256, LONG, [level.width]),
            _numbers(257, LONG, [level.height]),
            _numbers(258, SHORT, [8]),
            _numbers(259, SHORT, [8]),  # Adobe DEFLATE
            _numbers(262, SHORT, [1]),  # min-is-black: class ids and confidences, the palette is in the .aux.xml
            _numbers(277, SHORT, [1]),
            _numbers(284, SHORT, [1]),
            _numbers(322, SHORT, [TILE]),
            _numbers(323, SHORT, [TILE]),
            _numbers(324, offset_type, tile_offsets),
            _numbers(325, offset_type, sizes[index]),
            _numbers(339, SHORT, [1]),  # unsigned integers
        ]
        if index:
            entries.append(_numbers(254, LONG, [1]))  # a reduced-resolution version of the first image
        else:
            entries.extend(fields)
        if nodata_field is not None:
            entries.append(nodata_field)
        return sorted(entries, key=lambda f: f.tag)

    # the IFDs' sizes do not depend on the offsets' values, so lay them out once with zeros
    ifd_starts = []
    position = _padded(header_size + len(GHOST))  # IFDs start on a word boundary
    for index, level in enumerate(levels):
        ifd_starts.append(position)
        position += len(_ifd_bytes(ifd_fields(index, level, np.zeros(level.offsets.size, np.int64)), 0, 0, big))
    data_start = position
    tile_offsets: list[np.ndarray] = [np.empty(0, np.int64)] * len(levels)
    for index in reversed(range(len(levels))):  # smallest overview first, full resolution last
        framed_sizes = sizes[index] + 8
        starts = position + np.concatenate([[0], np.cumsum(framed_sizes)[:-1]])
        tile_offsets[index] = starts + 4  # past the size leader
        position += int(framed_sizes.sum())
    with open(path, "wb") as out:
        header = (
            b"II+\x00" + struct.pack("<HHQ", 8, 0, ifd_starts[0])
            if big
            else b"II*\x00" + struct.pack("<I", ifd_starts[0])
        )
        out.write(header + GHOST)
        out.write(b"\x00" * (ifd_starts[0] - out.tell()))
        for index, level in enumerate(levels):
            assert out.tell() == ifd_starts[index]
            following = ifd_starts[index + 1] if index + 1 < len(levels) else 0
            out.write(_ifd_bytes(ifd_fields(index, level, tile_offsets[index]), out.tell(), following, big))
        assert out.tell() == data_start
        for index in reversed(range(len(levels))):
            for tile in levels[index].framed_tiles(missing):
                out.write(tile)
        assert out.tell() == position


def _padded(size: int) -> int:
    return size + (size & 1)  # values start on a word boundary


def _ifd_bytes(entries: list[Field], start: int, following: int, big: bool) -> bytes:
    """One IFD at ``start`` with its out-of-line values right after its table."""
    inline = 8 if big else 4
    table_size = (8 + 20 * len(entries) + 8) if big else (2 + 12 * len(entries) + 4)
    table = bytearray(struct.pack("<Q", len(entries)) if big else struct.pack("<H", len(entries)))
    values = bytearray()
    for field in entries:
        if len(field.data) <= inline:
            slot = field.data.ljust(inline, b"\x00")
        else:
            at = start + table_size + len(values)
            slot = struct.pack("<Q", at) if big else struct.pack("<I", at)
            values += field.data + b"\x00" * (len(field.data) & 1)
        table += (
            struct.pack("<HHQ", field.tag, field.type, field.count)
            if big
            else struct.pack("<HHI", field.tag, field.type, field.count)
        )
        table += slot
    table += struct.pack("<Q", following) if big else struct.pack("<I", following)
    return bytes(table + values)
