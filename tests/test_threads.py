"""pipeline.threads: shapely's element-wise operations in threads give one call's result, byte for byte."""

import numpy as np
import shapely

from pipeline import threads


def test_buffers_and_cuts_in_threads_are_one_calls_bytes(monkeypatch):
    rng = np.random.default_rng(4)
    starts = rng.uniform(0, 10, (6000, 2))
    lines = shapely.linestrings(np.stack([starts, starts + rng.normal(0, 0.3, (6000, 2))], axis=1))
    calls = []

    def buffer(geometries, **options):
        calls.append(len(geometries))
        return shapely.buffer(geometries, **options)

    monkeypatch.setattr(threads, "usable_cores", lambda: 3)
    zones = threads.threaded(buffer, lines, distance=0.05, quad_segs=16)
    assert calls == [2000, 2000, 2000]  # three chunks, in order
    assert shapely.to_wkb(zones).tolist() == shapely.to_wkb(shapely.buffer(lines, 0.05, quad_segs=16)).tolist()
    cut = threads.threaded(shapely.intersection, lines, zones[::-1])
    assert shapely.to_wkb(cut).tolist() == shapely.to_wkb(shapely.intersection(lines, zones[::-1])).tolist()
    calls.clear()
    threads.threaded(buffer, lines[:3999], distance=0.05)  # under two threads' worth: one call
    assert calls == [3999]
