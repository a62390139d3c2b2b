"""Block memory: buffers lent and given back are reused (never a foreign array, never more than
``keep`` waiting), and the engine's NumPy arrays are in small pages while it runs."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

from pipeline.raster.buffers import BufferPool, _set_huge_pages, small_pages


def test_a_given_back_buffer_is_lent_again_for_any_request_it_holds():
    pool = BufferPool(keep=2)
    first = pool.take(1000)
    pixels = first[:750].reshape(3, 10, 25)  # the reader's arrays are views cut from the buffer
    assert pool.give_back(pixels) and pool.waiting == 1
    again = pool.take(600)
    assert again.size == 600 and np.shares_memory(again, first) and pool.waiting == 0
    assert not pool.give_back(np.empty(600, np.uint8)) and pool.waiting == 0  # not this pool's
    assert pool.give_back(again) and pool.waiting == 1
    assert not pool.give_back(again) and pool.waiting == 1  # back once only


def test_the_smallest_buffer_that_fits_is_lent_and_at_most_keep_wait():
    pool = BufferPool(keep=2)
    small, middle, large = pool.take(100), pool.take(200), pool.take(300)
    for buffer in (small, middle, large):
        pool.give_back(buffer)
    assert pool.waiting == 2  # small and middle; large found no room
    fits = pool.take(150)
    assert np.shares_memory(fits, middle) and pool.waiting == 1
    pool.give_back(fits)
    bigger = pool.take(400)  # none fits: the smallest waiting one goes, a new one is made
    assert bigger.size == 400 and not any(np.shares_memory(bigger, b) for b in (small, middle, large))
    assert pool.waiting == 1 and np.shares_memory(pool.take(10), middle)


def test_buffers_made_at_the_largest_size_serve_every_later_request():
    pool = BufferPool(smallest=1000)
    corner = pool.take(100)  # a raster's first, smaller block
    assert corner.size == 100 and corner.base.size == 1000
    pool.give_back(corner)
    inner = pool.take(1000)
    assert np.shares_memory(inner, corner) and pool.waiting == 0


def test_a_buffer_dropped_without_being_given_back_is_freed_not_held():
    pool = BufferPool()
    taken = pool.take(1000)
    freed = weakref.ref(taken.base)
    del taken
    gc.collect()
    assert freed() is None and pool.waiting == 0


def _huge_pages_on() -> bool:
    before = _set_huge_pages(True)
    _set_huge_pages(before)
    return before


def _anon_huge_kb(array: np.ndarray) -> int:
    """AnonHugePages (kB) of the mapping that holds the middle of ``array`` (/proc/self/smaps)."""
    address = array.ctypes.data + array.nbytes // 2  # NumPy advises from the first whole page on
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(part, 16) for part in head.split("-"))
            inside = start <= address < end
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    raise AssertionError("no mapping holds the array")


def test_the_engine_runs_in_small_pages_and_leaves_numpy_as_it_found_it(monkeypatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    assert _huge_pages_on()  # NumPy's default on Linux >= 4.6
    started, leave = threading.Event(), threading.Event()

    def other_survey():
        with small_pages():
            started.set()
            leave.wait(10)

    other = threading.Thread(target=other_survey)
    with small_pages():
        assert not _huge_pages_on()
        other.start()
        started.wait(10)
        with small_pages():  # nested
            assert not _huge_pages_on()
        assert not _huge_pages_on()
    assert not _huge_pages_on()  # the other survey still runs
    leave.set()
    other.join()
    assert _huge_pages_on()  # as it found it


FRESH_PROCESS = """
import numpy as np
from pipeline.raster.buffers import small_pages
from tests.raster.test_buffers import _anon_huge_kb, _huge_pages_on

with small_pages():
    block = np.ones(64 * 2**20, np.uint8)  # 64 MB, touched: whole huge pages if any were advised
    print(_huge_pages_on(), _anon_huge_kb(block))
"""


def test_an_array_made_in_small_pages_has_no_huge_page():
    """In a fresh process: in a long one (a test worker after many modules) the new array's mapping
    once held 12 MB of huge pages in a fresh-clone run of the suite, from memory NumPy had advised
    before; the switch itself is tested in the worker above."""
    import subprocess
    import sys

    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, cwd=Path(__file__).parents[2]
    )
    assert done.returncode == 0, done.stderr
    advised, huge_kb = done.stdout.split()
    assert advised == "False"
    if "[always]" not in mode:  # with `always` the kernel gives huge pages unasked
        assert int(huge_kb) == 0
    assert _huge_pages_on()  # the last to leave put it back


def test_a_numpy_page_setting_the_user_chose_is_left_alone(monkeypatch):
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    with small_pages():
        assert _huge_pages_on()
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "0")
    _set_huge_pages(False)  # as NumPy sets it at import
    with small_pages():
        assert not _huge_pages_on()
    assert not _huge_pages_on()


@pytest.fixture(autouse=True)
def _numpy_as_it_was():
    before = _huge_pages_on()
    yield
    _set_huge_pages(before)
