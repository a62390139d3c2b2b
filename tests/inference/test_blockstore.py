"""The resume store cannot lie: damaged, swapped, foreign or forged block files are recomputed."""

from __future__ import annotations

import hashlib
import logging
import shutil

import numpy as np
import pytest
import rasterio
import zstandard

from pipeline.config import SurveyConfig
from pipeline.inference.blend import BlockResult
from pipeline.inference.blockstore import HEADER, BlockStore, CorruptBlock
from pipeline.survey import infer_blocks, prepare_survey, run_survey
from tests.conftest import write_raster

CFG = SurveyConfig(device="cpu", gsd_policy="ignore", batch=4, block=64)


def _mask(folder) -> np.ndarray:
    with rasterio.open(folder / "mask.tif") as ds:
        return ds.read(1)


def test_damaged_swapped_foreign_and_forged_blocks_are_recomputed(tmp_path, tiny_model, crack_mosaic, caplog):
    ortho, _ = crack_mosaic
    with rasterio.open(ortho) as src:
        pixels = src.read((1, 2, 3), window=((0, 200), (0, 230)))
    image = write_raster(tmp_path / "in.tif", pixels)
    reference = run_survey(image, tmp_path / "reference", CFG, model_path=tiny_model)
    assert reference.tiling.blocks == 16

    other = prepare_survey(image, tmp_path / "other", CFG.model_copy(update={"tta": True}), model_path=tiny_model)
    infer_blocks(other, indices=[4])  # a block of another survey (other key) of the same window
    prepared = prepare_survey(image, tmp_path / "out", CFG, model_path=tiny_model)
    infer_blocks(prepared)
    store = prepared.store
    paths = {i: store.path(i) for i in range(16)}
    flipped = bytearray(paths[0].read_bytes())
    flipped[-10] ^= 0x01
    paths[0].write_bytes(bytes(flipped))  # bit flip in the payload
    paths[1].write_bytes(paths[1].read_bytes()[:100])  # truncated
    two, three = paths[2].read_bytes(), paths[3].read_bytes()
    paths[2].write_bytes(three)  # swapped
    paths[3].write_bytes(two)
    shutil.copy(other.store.path(4), paths[4])  # foreign
    good = store.load(5)
    forged = BlockResult(good.core, np.full_like(good.classes, 7), good.confidence)
    store.save(5, forged)  # well formed, right key, class ids the model cannot produce
    paths[6].write_bytes(b"")  # empty
    # forged by someone who can write the folder but not read its secret: a plain (unkeyed) checksum
    header = bytearray(paths[7].read_bytes()[: HEADER.size])
    classes = zstandard.ZstdCompressor(level=1).compress(np.ones_like(good.classes).tobytes())
    confidence = zstandard.ZstdCompressor(level=1).compress(good.confidence.tobytes())
    payload = classes + confidence
    fields = list(HEADER.unpack(bytes(header)))
    fields[7:10] = [len(classes), len(confidence), hashlib.blake2b(payload, digest_size=32).digest()]
    paths[7].write_bytes(HEADER.pack(*fields) + payload)
    assert (store.root / ".secret").stat().st_mode & 0o077 == 0  # the key is the owner's alone

    stale = tmp_path / "out" / ".msaf-blocks" / ("0" * 24)  # a store of an earlier run with other settings
    stale.mkdir()
    (stale / "block_000001.blk").write_bytes(b"old")
    with caplog.at_level(logging.WARNING, logger="pipeline.inference.blockstore"):
        resumed = run_survey(image, tmp_path / "out", CFG, model_path=tiny_model)
    assert resumed.tiling.blocks_reused == 16 - 8
    warned = " ".join(r.getMessage() for r in caplog.records)
    for reason in (
        "checksum mismatch",
        "truncated",
        "holds block 3",
        "holds block 2",
        "another survey",
        "class ids outside",
        "recomputed",
    ):
        assert reason in warned, reason
    np.testing.assert_array_equal(_mask(tmp_path / "out"), _mask(tmp_path / "reference"))
    assert not (tmp_path / "out" / ".msaf-blocks").exists()  # its own store and the stale one are gone


def test_store_checks_the_window_of_each_block(tmp_path):
    from pipeline.raster.grid import Box

    store = BlockStore(tmp_path / "s", "k" * 24, lambda i: Box(0, 64 * i, 64, 64 * (i + 1)), 3)
    store.save(0, BlockResult(Box(0, 0, 64, 64), np.zeros((64, 64), np.uint8), np.full((64, 64), 200, np.uint8)))
    store.save(1, BlockResult(Box(0, 0, 64, 64), np.zeros((64, 64), np.uint8), np.full((64, 64), 200, np.uint8)))
    store.save(2, BlockResult(Box(0, 128, 64, 192), np.full((64, 64), 255, np.uint8), np.zeros((64, 64), np.uint8)))
    assert store.done() == {0, 2}  # block 1 held block 0's window; nodata 255 is a valid id
    assert store.stored() == {0, 2}


def test_blocks_saved_while_the_hand_over_is_open_are_taken_from_memory_and_others_from_disk(tmp_path):
    """A stitch in the process that inferred the blocks takes the very arrays that were saved (no
    read back, so a file changed on disk after the save cannot change the mask); blocks saved before
    it opened, or by another store's folder, come from their files and are checked."""
    from pipeline.raster.grid import Box

    def block(value: int) -> BlockResult:
        shape = (64, 64)
        return BlockResult(Box(0, 0, 64, 64), np.full(shape, value % 3, np.uint8), np.full(shape, value, np.uint8))

    store = BlockStore(tmp_path / "s", "k" * 24, None, 3)
    before = block(10)
    store.save(0, before)  # no hand-over yet: only the file
    # another instance for the same folder, named another way (the survey and the stitch each make their own)
    stitch_side = BlockStore(tmp_path / "x" / ".." / "s", "k" * 24, None, 3)
    with stitch_side.hand_over(limit=8):
        saved = block(20)
        store.save(1, saved)
        elsewhere = BlockStore(tmp_path / "t", "k" * 24, None, 3)
        elsewhere.save(1, block(30))  # another folder's block is not handed over here
        damaged = store.path(1).read_bytes()
        store.path(1).write_bytes(damaged[:-5])  # changed on disk after the save
        taken = stitch_side.take(1)
        assert taken is saved  # the saved arrays themselves
        with pytest.raises(CorruptBlock):
            stitch_side.take(1)  # taken once: after that only the file is left, and it fails its check
        from_disk = stitch_side.take(0)
        assert from_disk is not before and np.array_equal(from_disk.confidence, before.confidence)
        store.save(2, block(40))
    assert stitch_side.take(2) is not None  # not taken before the hand-over closed: read from its file
    store.save(3, block(50))  # after it closed nothing is kept in memory
    assert stitch_side.take(3).confidence[0, 0] == 50


def test_a_save_that_fails_leaves_nothing_in_the_hand_over(tmp_path):
    from pipeline.raster.grid import Box

    store = BlockStore(tmp_path / "s", "k" * 24, None, 3)
    result = BlockResult(Box(0, 0, 8, 8), np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8))
    store.path(5).mkdir()  # the file cannot be renamed into place: a folder holds its name
    (store.path(5) / "in-the-way").touch()
    with store.hand_over(limit=8):
        with pytest.raises(OSError):
            store.save(5, result)
        with pytest.raises(CorruptBlock, match="unreadable"):
            store.take(5)  # nothing in memory for a block whose save failed: only what is on disk


def test_the_hand_over_holds_at_most_its_limit_and_the_rest_come_from_disk(tmp_path):
    """A stitch that falls behind the inference (a fast GPU) must not make memory grow with the
    raster: beyond the limit, blocks wait on disk only, as they did before the hand-over."""
    from pipeline.raster.grid import Box

    store = BlockStore(tmp_path / "s", "k" * 24, None, 3)
    results = [
        BlockResult(Box(0, 0, 8, 8), np.zeros((8, 8), np.uint8), np.full((8, 8), i + 1, np.uint8)) for i in range(4)
    ]
    with store.hand_over(limit=2):
        for index, result in enumerate(results):
            store.save(index, result)
        taken = [store.take(index) for index in range(4)]
        assert [t is r for t, r in zip(taken, results, strict=True)] == [True, True, False, False]
        assert [int(t.confidence[0, 0]) for t in taken] == [1, 2, 3, 4]  # the rest read back, the same
        store.save(4, results[0])  # taking made room again
        assert store.take(4) is results[0]
