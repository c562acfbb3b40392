"""Checks shared by the kernel tests: poisoned outputs, FP8 comparisons in ULPs, relative errors."""

from contextlib import contextmanager

import torch


@contextmanager
def poisoned_outputs():
    """torch.empty fills new tensors with NaN inside this block, so an output element the kernel never
    wrote shows up as NaN instead of passing with whatever the memory held."""
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = was_fill


def e4m3_ordinal(q: torch.Tensor) -> torch.Tensor:
    """Signed position of each float8_e4m3fn value on the number line: neighbours differ by 1, +0 == -0."""
    bits = q.view(torch.uint8).to(torch.int32)
    magnitude = bits & 0x7F
    return torch.where(bits & 0x80 != 0, -magnitude, magnitude)


def assert_fp8_within_ulps(actual: torch.Tensor, expected: torch.Tensor, ulps: int = 1) -> None:
    """Same shape, no NaN, and every value within `ulps` e4m3 steps of the expected one."""
    assert actual.dtype == expected.dtype == torch.float8_e4m3fn
    assert actual.shape == expected.shape
    assert not actual.float().isnan().any(), "NaN in the fp8 output (unwritten or NaN input)"
    distance = (e4m3_ordinal(actual) - e4m3_ordinal(expected)).abs()
    worst = distance.max().item() if distance.numel() else 0
    assert worst <= ulps, f"{(distance > ulps).sum().item()} values more than {ulps} ULP off (worst {worst})"


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-300)).item()


def assert_graph_replays_equal(launch, eager: torch.Tensor, replays: int = 3) -> None:
    """Capture launch() (returning its output tensor) in a CUDA graph and check that every replay, into a
    zeroed output, reproduces `eager` bit for bit (state the kernels keep between launches, such as split
    counters, must come back the same)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        replayed = launch()
    for _ in range(replays):
        replayed.zero_()
        graph.replay()
        assert torch.equal(replayed, eager)
