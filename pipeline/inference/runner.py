"""Batched tile inference and blending on the model's device.

A block's region is uploaded and normalised once; tiles are cut from it on the device into one
reused batch buffer; every forward pass has the same shape (short batches are padded), so a
tile's result never depends on its batch neighbours and ``torch.compile`` never recompiles;
probabilities are blended into float32 block-sized accumulators on the device, and only uint8
class ids and confidence come back to the host.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from pipeline.inference.decision import Thresholds
from pipeline.inference.fill import mirror_fill
from pipeline.inference.fold import fold_batch_norms
from pipeline.inference.predict import Standardise, autocast_for, averaged_probabilities
from pipeline.inference.scales import SINGLE, Scales, check_scales
from pipeline.raster.grid import Block, Box, TileGrid, blend_weights
from pipeline.stop import raise_if_stopped


@contextmanager
def flush_denormals(device: torch.device) -> Iterator[None]:
    """On a CPU, treat subnormal floats as zero while the network runs. Real photos drive some
    activations of the full-resolution refinement branch into the subnormal range, where x86 slows
    down many times over: flushing made the shipped model's 4096² CPU survey 7 % faster (48.5 s
    against 52 s, 2 cores); the values flushed are below 1e-38, far under anything a probability shows."""
    if device.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def inference_network(model: nn.Module, device: torch.device) -> nn.Module:
    """The network as a runner runs it: batch norms folded into the convolutions (a copy: the caller's
    model stays as trained), on ``device``, weights channels_last. The GPU's bf16 tensor cores want
    channels_last, and on a CPU oneDNN then runs every convolution channels_last (the first converts
    the input). Forward passes in inference mode only read it, so runners may share one."""
    return fold_batch_norms(model).to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]


class TileRunner:
    """Runs tiles of one fixed shape through a model and blends them into block cores.

    Args:
        model: network in eval mode returning logits (N, C, H, W); prepared by ``inference_network``
            when ``prepared`` (runners then share it), else prepared here (a copy per runner).
        mean, std: the training normalisation (0..255 scale).
        device: where the model runs (blending happens there too).
        batch: forward-pass batch size; shorter batches are padded to it.
        tile_shape: (h, w) of every tile.
        tta: also run horizontally flipped tiles and average the probabilities.
        scales: the views of each tile whose probabilities are averaged (``pipeline.inference.scales``).
        compile: wrap the model in ``torch.compile``.
        thresholds: the model's calibrated decision thresholds (class id, threshold).
        bf16: run the network in bf16 autocast; None: the device's default (bf16 on CUDA only).
        prepared: ``model`` is already ``inference_network(model, device)``.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        batch: int,
        tile_shape: tuple[int, int],
        *,
        tta: bool = False,
        scales: Scales = SINGLE,
        compile: bool = False,
        thresholds: Thresholds = (),
        bf16: bool | None = None,
        prepared: bool = False,
        exposure_floor: float = 0.0,
    ) -> None:
        self.device = device
        self.bf16 = bf16
        self.thresholds = tuple(thresholds)
        self.batch = batch
        self.tile_shape = tile_shape
        self.tta = tta
        self.scales = check_scales(scales)
        # The batch buffer is channels_last only on a GPU: on a CPU the engine's own elementwise work on
        # it is faster in the plain layout, and the network's output is the same bit for bit either way.
        self.model = model if prepared else inference_network(model, device)
        memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.forward = torch.compile(self.model) if compile else self.model
        self.standardise = Standardise(mean, std, device, exposure_floor)
        self.mean = self.standardise.mean  # what padding and fully nodata tiles are filled with (scales to 0)
        self._inputs = torch.zeros((batch, 3, *tile_shape), device=device).contiguous(memory_format=memory_format)
        self._weights: dict[tuple[bool, ...], torch.Tensor] = {}
        self._sums: torch.Tensor | None = None  # the block accumulators, reused from block to block
        self._probs: torch.Tensor | None = None  # the softmax's output, reused from batch to batch

    def _accumulators(self, classes: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed (classes, h, w) probability and (h, w) weight sums in one buffer kept between blocks:
        a fresh 270 MB per 4096² block cost 0.11 s of page faults on a CPU, zeroing it again 0.02 s."""
        planes = classes * height * width
        if self._sums is None or self._sums.numel() < planes + height * width:
            self._sums = None  # let the old buffer go before the larger one is made
            self._sums = torch.empty(planes + height * width, device=self.device)
        sums = self._sums[: planes + height * width].zero_()
        return sums[:planes].view(classes, height, width), sums[planes:].view(height, width)

    def _upload(self, pixels: np.ndarray) -> torch.Tensor:
        """(3, H, W) uint8 host array -> the same on the device (one copy, no float blow-up)."""
        host = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.device.type == "cuda":
            host = host.pin_memory()
        return host.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def _probabilities(self, count: int) -> torch.Tensor:
        """Normalise the batch buffer in place, run the model; softmax of the first ``count`` rows,
        in a buffer this runner reuses (valid until the next call)."""
        self.standardise.in_place(self._inputs)
        with autocast_for(self.device, self.bf16), flush_denormals(self.device):
            probs = averaged_probabilities(self.forward, self._inputs, self.scales, self.tta, self._probs_like)
        return probs[:count]

    def _probs_like(self, logits: torch.Tensor) -> torch.Tensor:
        """The softmax's output buffer, kept between batches: a fresh one per batch faulted its pages
        in again each time (on a CPU a quarter of a survey's page faults; the values are the same)."""
        if self._probs is None or self._probs.shape != logits.shape:
            self._probs = torch.empty_like(logits, memory_format=torch.contiguous_format)
        return self._probs

    @torch.inference_mode()
    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """Probabilities (n, C, h, w) float32 for uint8 tiles (n, h, w, 3); for tests and benchmarks."""
        outputs = []
        for start in range(0, len(tiles), self.batch):
            chunk = tiles[start : start + self.batch]
            self._inputs.copy_(self.mean.expand_as(self._inputs))  # padding normalises to 0
            for i, tile in enumerate(chunk):
                self._inputs[i].copy_(self._upload(tile.transpose(2, 0, 1)))
            outputs.append(self._probabilities(len(chunk)).to("cpu", copy=True).numpy())  # the buffer is reused
        return np.concatenate(outputs)

    def _tile_weights(self, grid: TileGrid, edges: tuple[bool, bool, bool, bool]) -> torch.Tensor:
        if edges not in self._weights:
            weights = blend_weights(*grid.tile_shape, edges)
            self._weights[edges] = torch.from_numpy(weights.copy()).to(self.device)
        return self._weights[edges]

    @torch.inference_mode()
    def blend(
        self,
        grid: TileGrid,
        block: Block,
        pixels: np.ndarray,
        valid: np.ndarray | None = None,
        *,
        skip_nodata_tiles: bool = False,
    ) -> torch.Tensor:
        """Weighted mean probabilities (C, core h, core w) over every tile touching the core, in a
        buffer this runner reuses: valid until its next ``blend``.

        Tiles are accumulated in global tile order with the same weights whichever block a pixel
        falls in, so the result is bit-identical for any block size.

        Args:
            pixels: RGB uint8 (3, H, W) of ``block.region``.
            valid: its footprint; nodata pixels of each tile are filled from that tile's valid
                pixels (``pipeline.inference.fill``), so no step at the footprint edge looks like a crack.
            skip_nodata_tiles: do not run tiles without a valid pixel. They cover nodata alone, so
                no valid pixel's probabilities change (the same tiles add to it in the same order);
                pixels no tile covers come out 0. For callers that mark nodata pixels as such (not
                for resampling, where nodata next to the footprint is interpolated into it).
        """
        ((_, probs),) = self._blend_windows(grid, block, pixels, valid, skip_nodata_tiles, block.core.height)
        return probs

    def blend_rows(
        self, grid: TileGrid, block: Block, pixels: np.ndarray, valid: np.ndarray | None = None, piece_rows: int = 0
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """``blend`` with nodata tiles skipped, handed out a band of rows at a time as soon as no
        later tile adds to them: (first core row, probabilities (C, rows, core w)), each valid until
        the next one is asked for. The same values as ``blend``, bit for bit.

        On a CPU the sums live in a window one tile high that slides down the block (17 MB for a
        4096-wide block instead of 270 MB: fresh memory faults in a page at a time, and a band is
        decided while it is still in the cache); a GPU sums the whole block and hands it out once.
        ``piece_rows``: on a CPU, hand each band out that many rows at a time, each divided just
        before it goes (so it is decided while it is in the core's own cache); 0: whole bands.
        """
        if self.device.type == "cuda":  # one band: the device decides the block at once
            return self._blend_windows(grid, block, pixels, valid, True, block.core.height)
        rows = min(self.tile_shape[0], block.core.height)
        return self._blend_windows(grid, block, pixels, valid, True, rows, piece_rows)

    @torch.inference_mode()  # a generator: torch enters the mode around each step, not across yields
    def _blend_windows(
        self,
        grid: TileGrid,
        block: Block,
        pixels: np.ndarray,
        valid: np.ndarray | None,
        skip_nodata_tiles: bool,
        window_rows: int,
        piece_rows: int = 0,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Accumulate the block's tiles into a window of ``window_rows`` core rows; whenever a tile
        reaches below it, the rows above that tile are final (tiles come in row-major order):
        they are divided and handed out, and the window slides down to the tile's first row."""
        region = self._upload(pixels)
        core = block.core
        acc: torch.Tensor | None = None
        weight_sum: torch.Tensor | None = None
        tiles = block.tiles
        tile_valid: dict[Box, np.ndarray] = {}  # tiles with nodata, to be filled (none, the usual case)
        if valid is not None and not valid.all():
            tile_valid = {t: inside for t in tiles if not (inside := valid[t.relative_to(block.region)]).all()}
            if skip_nodata_tiles:
                tiles = tuple(t for t in tiles if t not in tile_valid or tile_valid[t].any())
        skipped = len(tiles) < len(block.tiles)
        base = touched = 0  # the window holds core rows from base; rows base..touched have sums
        for start in range(0, len(tiles), self.batch):
            raise_if_stopped()  # a Ctrl-C stops the survey within one batch
            group = tiles[start : start + self.batch]
            for i, tile in enumerate(group):
                window = tile.relative_to(block.region)
                pixels_in = region[(slice(None), *window)]
                if tile in tile_valid:  # nodata: continued from the tile's valid pixels (as bytes)
                    pixels_in = mirror_fill(pixels_in, tile_valid[tile], self.mean.view(3))
                self._inputs[i].copy_(pixels_in)
            if len(group) < self.batch:
                self._inputs[len(group) :].copy_(self.mean.expand_as(self._inputs[len(group) :]))
            probs = self._probabilities(len(group))
            if acc is None or weight_sum is None:
                acc, weight_sum = self._accumulators(probs.shape[1], window_rows, core.width)
            for tile, tile_probs in zip(group, probs, strict=True):
                inter = tile.intersection(core)
                if inter is None:  # a tile of the halo alone adds nothing to this core
                    continue
                src, (dst_rows, dst_cols) = inter.relative_to(tile), inter.relative_to(core)
                if dst_rows.stop - base > window_rows:  # the rows above this tile are final
                    yield from _handed_out(acc, weight_sum, base, dst_rows.start - base, skipped, piece_rows)
                    _slide(acc, weight_sum, dst_rows.start - base, touched - base)
                    base = dst_rows.start
                rows = slice(dst_rows.start - base, dst_rows.stop - base)
                weights = self._tile_weights(grid, grid.edges(tile))[src]
                acc[:, rows, dst_cols].addcmul_(tile_probs[(slice(None), *src)], weights)
                weight_sum[rows, dst_cols].add_(weights)  # `+=` would index the view again to assign it back
                touched = max(touched, dst_rows.stop)
        if acc is None or weight_sum is None:
            raise ValueError(f"block {block.index} has no tiles")
        while True:  # the rest, a window at a time (rows below every tile that ran are 0s)
            count = min(window_rows, core.height - base)
            yield from _handed_out(acc, weight_sum, base, count, skipped, piece_rows)
            base += count
            if base == core.height:
                return  # the last rows stay as handed out (``blend`` returns them)
            _slide(acc, weight_sum, count, count)


def _handed_out(
    acc: torch.Tensor, weight_sum: torch.Tensor, base: int, rows: int, skipped: bool, piece_rows: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """A window's first ``rows`` rows as weighted means, (first core row, rows), ``piece_rows`` at a
    time (0: at once), each divided in place just before it is handed out."""
    step = piece_rows or max(rows, 1)
    for start in range(0, rows, step):
        yield base + start, _divided(acc, weight_sum, start, min(start + step, rows), skipped)


def _divided(acc: torch.Tensor, weight_sum: torch.Tensor, start: int, stop: int, skipped: bool) -> torch.Tensor:
    """The weighted mean of a window's rows ``start``..``stop``, in place. Where tiles were skipped, pixels
    only they cover are 0, not 0/0 (a covered pixel's sum is >= the smallest Hann weight squared, ~1e-9)."""
    if skipped:
        weight_sum[start:stop].clamp_(min=1e-30)
    return acc[:, start:stop].div_(weight_sum[start:stop])


def _slide(acc: torch.Tensor, weight_sum: torch.Tensor, by: int, touched: int) -> None:
    """Move a window's rows ``by``..``touched`` (sums still growing) to its top and zero the rest."""
    kept = touched - by
    if kept > 0:
        moving = slice(by, touched)
        overlap = kept > by
        acc[:, :kept].copy_(acc[:, moving].clone() if overlap else acc[:, moving])
        weight_sum[:kept].copy_(weight_sum[moving].clone() if overlap else weight_sum[moving])
    acc[:, max(kept, 0) : touched].zero_()
    weight_sum[max(kept, 0) : touched].zero_()
