"""What finding the collar costs the read thread, against reading the same pixels with a mask.

A file that declares no footprint has its fill found block by block (``pipeline.raster.collar``) on
the survey's read thread, beside the decoding. This bench takes ``engine_throughput.py``'s JPEG mosaic
with an irregular footprint, writes the same picture with the outside painted black
and no mask, and reads every survey block of both, as the survey reads them: the masked file
(the baseline, in the same run), the painted one with the collar found. It prints each block's
seconds, the rate of both and their ratio, and counts the pixels where the painted file's footprint
differs from the masked one's.

    python bench/collar_cost.py --size 8192 --out metrics/collar_cost.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import rasterio
from engine_throughput import compose
from machine import machine
from rich.console import Console
from rich.table import Table

from pipeline.config import CollarConfig, ScalingConfig
from pipeline.raster.collar import CollarFinder, CollarRule
from pipeline.raster.grid import Box, TileGrid
from pipeline.raster.source import BlockReader, open_source


@dataclass(frozen=True)
class BlockTiming:
    """One survey block read both ways: seconds for the masked file, the painted one, its collar."""

    box: Box
    nodata_share: float
    read_masked_s: float
    read_painted_s: float
    collar_s: float

    def as_json(self) -> dict[str, object]:
        return {
            "box": [self.box.row0, self.box.col0, self.box.row1, self.box.col1],
            "nodata_share": round(self.nodata_share, 4),
            "read_masked_s": round(self.read_masked_s, 4),
            "read_painted_s": round(self.read_painted_s, 4),
            "collar_s": round(self.collar_s, 4),
        }


def painted_copy(masked: Path, painted: Path) -> None:
    """The masked mosaic with its outside painted black and no mask (JPEG, YCbCr), block by block."""
    with rasterio.open(masked) as src:
        profile = src.profile | {"compress": "jpeg", "photometric": "YCBCR"}
        with rasterio.open(painted, "w", **profile) as out:
            for _, window in src.block_windows(1):
                rgb = src.read(window=window)
                rgb[:, src.dataset_mask(window=window) == 0] = 0
                out.write(rgb, window=window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--block", type=int, default=4096)
    parser.add_argument("--readers", type=int, default=2, help="decoding threads")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="collar-"))
    folder.mkdir(parents=True, exist_ok=True)
    masked, painted = compose(args.size, folder), folder / f"painted_{args.size}.tif"
    if not painted.exists():
        painted_copy(masked, painted)
    rule = CollarRule.of(CollarConfig())
    infos = {name: open_source(path, ScalingConfig()) for name, path in (("masked", masked), ("painted", painted))}
    assert infos["painted"].footprint == "none" and infos["masked"].footprint != "none"
    grid = TileGrid(args.size, args.size, 256, 64)
    boxes = [block.region for block in grid.blocks(args.block)]
    largest = max(box.height * box.width for box in boxes)
    readers = {name: BlockReader(info, args.readers, largest) for name, info in infos.items()}
    finder = CollarFinder(infos["painted"], rule)
    rows: list[BlockTiming] = []
    mismatched = 0
    for box in boxes:
        started = time.perf_counter()
        _, valid_masked = readers["masked"].read(box)
        read_masked = time.perf_counter() - started
        started = time.perf_counter()
        pixels, valid = readers["painted"].read(box)
        read_painted = time.perf_counter() - started
        started = time.perf_counter()
        finder.clear(box, pixels, valid)
        collar_s = time.perf_counter() - started
        mismatched += int((valid != valid_masked).sum())
        rows.append(BlockTiming(box, float(1 - valid_masked.mean()), read_masked, read_painted, collar_s))
        readers["masked"].release(valid_masked)
        readers["painted"].release(pixels)
    for reader in readers.values():
        reader.close()
    finder.close()
    megapixels = sum(r.box.height * r.box.width for r in rows) / 1e6
    masked_s = sum(r.read_masked_s for r in rows)
    painted_s = sum(r.read_painted_s + r.collar_s for r in rows)
    table = Table(
        title=f"{args.size}² JPEG mosaic, {len(rows)} blocks of {args.block}², {args.readers} decoding threads"
    )
    for column in ("block (rows, cols)", "nodata", "read, masked (s)", "read, painted (s)", "collar (s)"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            f"{r.box.row0}-{r.box.row1}, {r.box.col0}-{r.box.col1}", f"{r.nodata_share:.1%}", f"{r.read_masked_s:.3f}",
            f"{r.read_painted_s:.3f}", f"{r.collar_s:.3f}",
        )  # fmt: skip
    Console().print(table)
    summary = {
        "megapixels": megapixels,
        "masked_mpix_s": megapixels / masked_s,
        "painted_with_collar_mpix_s": megapixels / painted_s,
        "time_ratio": painted_s / masked_s,
        "footprint_pixels_differing": mismatched,
    }
    print(
        f"masked: {summary['masked_mpix_s']:.1f} Mpix/s; painted + collar: {summary['painted_with_collar_mpix_s']:.1f}"
        f" Mpix/s ({summary['time_ratio']:.2f}x the time); footprint pixels differing: {mismatched}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "args": vars(args) | {"workdir": str(folder)},
                    "summary": summary,
                    "blocks": [r.as_json() for r in rows],
                },
                indent=1,
                default=str,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
