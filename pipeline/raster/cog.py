"""Write block results into tiled GeoTIFFs, then finish them as Cloud-Optimized GeoTIFFs.

Blocks are written into temporary tiled GeoTIFFs (any order, from any thread), and so are their
overviews, sampled from each block while it is in memory (nearest: the top-left pixel of each
2^k x 2^k cell, as GDAL's NEAREST picks it). ``build_cog`` turns them into one COG (internal
tiling, DEFLATE, those overviews) under a temporary name, and ``publish`` renames it into place, so
a failed run never leaves a file that looks finished. Handing the COG driver the overviews halves
its time (it no longer reads the full-resolution layer back to make them).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.transform import Affine

from pipeline.fsutil import atomic_output
from pipeline.raster.grid import Box

QUOTE = {'"': "&quot;"}  # escape() entities for an XML attribute value

# The delivered COGs: DEFLATE (read by every GIS client) at level 1, which encodes a confidence
# layer in half the time of the default level 6 for files about 3 % larger; no predictor: on the
# shipped model's layers horizontal differencing made both files larger (mask +3 %, confidence
# +4 %) and slower to encode (+28 %, +12 %), since class ids and near-255 confidences do not vary
# smoothly the way photographs do.
COG_BLOCK = 512
COG_OPTIONS = {
    "COMPRESS": "DEFLATE",
    "LEVEL": "1",
    "BLOCKSIZE": str(COG_BLOCK),
    "BIGTIFF": "IF_SAFER",
    "OVERVIEWS": "FORCE_USE_EXISTING",  # the ones written from the blocks
    "NUM_THREADS": "ALL_CPUS",
}
WORKING_OPTIONS = {  # the working files, read once by the COG step: the fastest codec GDAL has
    "tiled": True,  # (4x faster than DEFLATE on a confidence layer), never delivered
    "blockxsize": COG_BLOCK,
    "blockysize": COG_BLOCK,
    "compress": "ZSTD",
    "ZSTD_LEVEL": 1,
    "BIGTIFF": "IF_SAFER",
}


def overview_factors(width: int, height: int, block: int = COG_BLOCK) -> list[int]:
    """Decimation factors 2, 4, ... until the smallest overview fits in one tile (GDAL's COG rule)."""
    factors: list[int] = []
    factor = 1
    while -(-max(width, height) // factor) > block:
        factor *= 2
        factors.append(factor)
    return factors


def _sampled(start: int, stop: int, factor: int) -> range:
    """Overview indices whose sampled pixel (index x factor) lies in [start, stop)."""
    return range(-(-start // factor), -(-stop // factor))


class GeoTiffSink:
    """A single-band uint8 raster written block by block, finished as a COG.

    Args:
        final: path of the finished COG.
        width, height, crs, transform: georeference, copied from the input.
        nodata: nodata value of the band.
    """

    def __init__(
        self,
        final: Path,
        width: int,
        height: int,
        crs: CRS,
        transform: Any,
        nodata: int,
        colormap: dict[int, tuple[int, int, int, int]] | None = None,
        categories: list[str] | None = None,
        description: str | None = None,
    ) -> None:
        self.final = Path(final)
        self.partial = self.final.with_name(f".{self.final.name}.blocks.partial.tif")
        self.width, self.height = width, height
        self.nodata = nodata
        self.description = description
        self._lock = threading.Lock()
        profile = {"driver": "GTiff", "count": 1, "dtype": "uint8", "crs": crs, "nodata": nodata, **WORKING_OPTIONS}
        self._ds = rasterio.open(self.partial, "w", width=width, height=height, transform=transform, **profile)
        self.factors = overview_factors(width, height)
        self._overviews = [
            rasterio.open(
                self._overview_path(factor),
                "w",
                width=-(-width // factor),
                height=-(-height // factor),
                transform=transform @ Affine.scale(factor),
                **profile,
            )
            for factor in self.factors
        ]
        self.colormap = colormap
        self.categories = categories

    def _overview_path(self, factor: int) -> Path:
        return self.final.with_name(f".{self.final.name}.overview{factor}.partial.tif")

    def _working_files(self) -> list[Path]:
        return [self.partial, *(self._overview_path(f) for f in self.factors), self._vrt_path]

    @property
    def _vrt_path(self) -> Path:
        return self.final.with_name(f".{self.final.name}.partial.vrt")

    def write(self, core: Box, data: np.ndarray) -> None:
        """Write one block's core window into the working GeoTIFF, and its samples into the overviews."""
        with self._lock:
            self._ds.write(data, 1, window=core.window)
            for factor, overview in zip(self.factors, self._overviews, strict=True):
                rows, cols = _sampled(core.row0, core.row1, factor), _sampled(core.col0, core.col1, factor)
                if not rows or not cols:
                    continue
                # exactly len(rows) x len(cols) samples: those whose index x factor lies in the core
                sample = data[rows.start * factor - core.row0 :: factor, cols.start * factor - core.col0 :: factor]
                window = rasterio.windows.Window(cols.start, rows.start, len(cols), len(rows))
                overview.write(np.ascontiguousarray(sample), 1, window=window)

    @property
    def staging(self) -> Path:
        """Where the finished COG waits until ``publish`` renames it into place."""
        return self.final.with_name(f".{self.final.name}.cog.partial.tif")

    def build_cog(self, tags: dict[str, str]) -> Path:
        """Close the working files and convert them to a COG at a temporary name (see ``publish``)."""
        transform, crs = self._ds.transform, self._ds.crs
        for dataset in (self._ds, *self._overviews):
            dataset.close()
        self._vrt_path.write_text(self._vrt(transform, crs, tags))
        try:
            rasterio.shutil.copy(self._vrt_path, self.staging, driver="COG", **COG_OPTIONS)
        finally:
            for path in self._working_files():
                path.unlink(missing_ok=True)
        return self.staging

    def _vrt(self, transform: Affine, crs: CRS | None, tags: dict[str, str]) -> str:
        """The working file with its overviews and tags, as one dataset for the COG driver."""
        overviews = "".join(
            f'<Overview><SourceFilename relativeToVRT="1">{escape(self._overview_path(f).name)}</SourceFilename>'
            "<SourceBand>1</SourceBand></Overview>"
            for f in self.factors
        )
        metadata = "".join(f'<MDI key="{escape(k, QUOTE)}">{escape(v)}</MDI>' for k, v in tags.items())
        description = f"<Description>{escape(self.description)}</Description>" if self.description else ""
        geo = ", ".join(repr(v) for v in transform.to_gdal())
        srs = f"<SRS>{escape(crs.to_wkt())}</SRS>" if crs else ""  # a grid without a CRS stays without one
        return (
            f'<VRTDataset rasterXSize="{self.width}" rasterYSize="{self.height}">'
            f"{srs}<GeoTransform>{geo}</GeoTransform>"
            f"<Metadata>{metadata}</Metadata>"
            f'<VRTRasterBand dataType="Byte" band="1"><NoDataValue>{self.nodata}</NoDataValue>{description}'
            f'<SimpleSource><SourceFilename relativeToVRT="1">{escape(self.partial.name)}</SourceFilename>'
            f"<SourceBand>1</SourceBand></SimpleSource>{overviews}</VRTRasterBand></VRTDataset>\n"
        )

    @property
    def sidecar(self) -> Path:
        """The GDAL PAM side-car that carries class names and the colour table."""
        return self.final.with_name(self.final.name + ".aux.xml")

    def publish(self) -> Path:
        """Rename the finished COG into place (atomic on one file system), with its class names.

        GeoTIFF has no place for category names, and its palette has no alpha (background would hide
        the orthomosaic), so both go where GDAL keeps them: the PAM side-car ``<name>.aux.xml``, read
        with the file by GDAL, rasterio and QGIS (which then draws the classes in colour).
        """
        os.replace(self.staging, self.final)
        if self.categories or self.colormap:
            with atomic_output(self.sidecar) as tmp:
                tmp.write_text(_pam_xml(self.colormap or {}, self.categories or []))
        return self.final

    def abort(self) -> None:
        """Drop everything written so far (on failure)."""
        for dataset in (self._ds, *self._overviews):
            if not dataset.closed:
                dataset.close()
        for path in (*self._working_files(), self.staging):
            path.unlink(missing_ok=True)


def _pam_xml(colormap: dict[int, tuple[int, int, int, int]], categories: list[str]) -> str:
    """GDAL PAM band metadata: palette interpretation, an RGBA colour table, category names."""
    body = ""
    if colormap:
        entries = "".join(
            '<Entry c1="{}" c2="{}" c3="{}" c4="{}"/>'.format(*colormap.get(v, (0, 0, 0, 0)))
            for v in range(max(colormap) + 1)
        )
        body += f"<ColorInterp>Palette</ColorInterp><ColorTable>{entries}</ColorTable>"
    if categories:
        names = "".join(f"<Category>{escape(n)}</Category>" for n in categories)
        body += f"<CategoryNames>{names}</CategoryNames>"
    return f'<PAMDataset><PAMRasterBand band="1">{body}</PAMRasterBand></PAMDataset>\n'
