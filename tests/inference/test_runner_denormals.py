"""Subnormal floats are flushed while the network runs on a CPU, and only then."""

import torch

from pipeline.inference.runner import flush_denormals


def test_subnormals_are_zero_inside_the_network_run_and_back_after():
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # subnormal in float32 (below 1.18e-38)
    assert tiny.item() != 0.0
    with flush_denormals(torch.device("cpu")):
        assert (tiny * 1.0).item() == 0.0  # flushed: x86 would otherwise take the slow path
    assert (tiny * 1.0).item() != 0.0  # the process's own arithmetic is left as it was
    with flush_denormals(torch.device("meta")):  # any other device: untouched
        assert (tiny * 1.0).item() != 0.0
