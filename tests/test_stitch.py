"""The stitch follows the block store: COGs written while blocks land are the ones written after."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest
import rasterio

from pipeline.config import SurveyConfig
from pipeline.errors import MsafError
from pipeline.stitch import Stitcher, stitch
from pipeline.survey import infer_blocks, prepare_survey
from tests.conftest import write_raster

CFG = SurveyConfig(device="cpu", gsd_policy="ignore", batch=4, block=64)
OUTPUTS = ("mask.tif", "confidence.tif")


@pytest.fixture
def held_blocks(tmp_path, tiny_model, crack_mosaic, monkeypatch):
    """A 200 x 230 survey (16 blocks of 64 px) stitched after its inference, and a copy of its store."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # the COG tags' creation time: the same bytes each time
    with rasterio.open(crack_mosaic[0]) as src:
        image = write_raster(tmp_path / "in.tif", src.read((1, 2, 3), window=((0, 200), (0, 230))))
    first = prepare_survey(image, tmp_path / "after", CFG, model_path=tiny_model)
    infer_blocks(first)
    held = tmp_path / "held"
    shutil.copytree(first.store_dir, held)  # block files and the store's secret
    after = stitch(first)
    following = prepare_survey(image, tmp_path / "following", CFG, model_path=tiny_model)
    following.store_dir.mkdir(parents=True)
    shutil.copy(held / ".secret", following.store_dir / ".secret")
    return after, following, held


def _land(held, store_dir, index: int, payload: bytes | None = None) -> None:
    """A block file arriving the way the store writes it: whole, by a rename."""
    name = f"block_{index:06d}.blk"
    partial = store_dir / f".{name}.partial"
    partial.write_bytes(payload if payload is not None else (held / name).read_bytes())
    os.replace(partial, store_dir / name)


def test_blocks_followed_as_they_land_give_the_same_files_as_a_stitch_afterwards(tmp_path, held_blocks):
    after, following, held = held_blocks
    order = np.random.default_rng(0).permutation(following.n_blocks).tolist()
    with Stitcher(following, poll_s=0.005) as stitcher:
        stitcher.follow()
        for index in order:
            _land(held, following.store_dir, index)
            time.sleep(0.01)
        deadline = time.monotonic() + 60
        while len(stitcher.added) < following.n_blocks and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(stitcher.added) == following.n_blocks  # every block was written before finish was called
        record = stitcher.finish()
    for name in OUTPUTS:
        assert (tmp_path / "following" / name).read_bytes() == (tmp_path / "after" / name).read_bytes(), name
    assert record.class_pixels == after.class_pixels
    assert not following.store_dir.exists()  # cleared once the files are in place


def test_a_block_changed_on_disk_while_followed_fails_the_finish_and_leaves_nothing_half_written(tmp_path, held_blocks):
    _, following, held = held_blocks
    with (
        pytest.raises(MsafError, match="block 3 changed on disk after it was inferred"),
        Stitcher(following, poll_s=0.005) as stitcher,
    ):
        stitcher.follow()
        for index in range(following.n_blocks):
            payload = (held / f"block_{index:06d}.blk").read_bytes()
            _land(held, following.store_dir, index, payload[:-7] if index == 3 else None)
        deadline = time.monotonic() + 60  # the follower finds it and discards it before finish is called
        while (following.store_dir / "block_000003.blk").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        stitcher.finish()
    out = tmp_path / "following"
    assert sorted(p.name for p in out.iterdir()) == [".msaf-blocks"]  # no COG, no spool, no survey.json
    assert not (following.store_dir / "block_000003.blk").exists()  # the bad block goes, to be recomputed
    assert len(list(following.store_dir.glob("block_*.blk"))) == following.n_blocks - 1


def test_a_survey_run_in_one_process_hands_its_blocks_over_in_memory_and_writes_the_same_files(
    tmp_path, held_blocks, tiny_model, monkeypatch
):
    """``run_survey`` infers and stitches in one process: the stitch takes each block from memory
    (not one is read back from disk) and the files are the bytes of a stitch from the store after.
    Room for all 16 blocks: with the default two, a stitch that falls behind a busy machine's
    inference reads the rest from disk (the hand-over's limit, tested in the block store's tests)."""
    from pipeline.inference.blockstore import BlockStore
    from pipeline.survey import run_survey

    after, _, _ = held_blocks
    monkeypatch.setattr(Stitcher, "HAND_OVER_BLOCKS", 16)
    loads: list[int] = []
    original = BlockStore.load
    monkeypatch.setattr(BlockStore, "load", lambda store, index: loads.append(index) or original(store, index))
    record = run_survey(tmp_path / "in.tif", tmp_path / "one-process", CFG, model_path=tiny_model)
    assert loads == []
    for name in OUTPUTS:
        assert (tmp_path / "one-process" / name).read_bytes() == (tmp_path / "after" / name).read_bytes(), name
    assert record.class_pixels == after.class_pixels
