"""benchmarks/llm_server_cpu_split.py: the per-request / per-token fit and the thread groups it reports."""

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def split(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling scripts by name, as when run
    return importlib.import_module("benchmarks.llm_server_cpu_split")


def test_the_fit_goes_through_both_points_whatever_their_order(split):
    fitted = split.fit({96: 500.0 + 96 * 20.0, 8: 500.0 + 8 * 20.0})
    assert fitted.per_request_us == pytest.approx(500.0)
    assert fitted.per_token_us == pytest.approx(20.0)


def test_a_thread_that_costs_the_same_at_both_lengths_is_all_per_request(split):
    assert split.fit({8: 90.0, 96: 90.0}) == (90.0, 0.0)


@pytest.mark.parametrize(
    ("tid", "comm", "name", "group"),
    [
        (100, "python", None, "event loop"),
        (101, "event_engine", None, "grpc core threads"),
        (102, "grpc_global_tim", None, "grpc core threads"),
        (103, "python", "instance-tiny_llm_0_0_0", "LLM instance thread"),
        (104, "python", "Thread-1 (_serve)", "grpc polling thread"),
        (105, "python", "llm-engine-reader", "llm-engine-reader"),
        (106, "python", "llm-trace-tiny_llm_0", "llm-trace-tiny_llm"),
        (107, "python", None, "other threads"),
    ],
)
def test_threads_are_grouped_by_what_they_serve(split, tid, comm, name, group):
    names = {} if name is None else {tid: name}
    assert split.thread_group(tid, 100, comm, names) == group
