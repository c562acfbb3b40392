"""observe_all: a batch of observations reads as the same values observed one by one."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from modelgate.backends.llm.batched_histogram import observe_all

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# On a bound (counted in that bucket, as `le` says), between bounds, zero, past the last finite bound (+Inf).
VALUES = [0.0, 0.001, 0.0010001, 0.005, 0.01, 0.01, 0.05, 0.1, 0.99, 1.0, 2.5, 1e9]


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in histogram.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def _histogram() -> Histogram:
    return Histogram("latency_seconds", "a latency", ("model",), buckets=BUCKETS, registry=CollectorRegistry())


@pytest.mark.parametrize("values", [VALUES, VALUES[::-1], [0.02] * 64, []])
def test_a_batch_reads_as_the_values_observed_one_by_one(values):
    one_by_one, batched = _histogram(), _histogram()
    series = one_by_one.labels("m")
    for value in values:
        series.observe(value)
    observe_all(batched.labels("m"), values)
    expected, got = _samples(one_by_one), _samples(batched)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key  # the sum up to rounding; counts exactly


def test_batches_add_up():
    one_by_one, batched = _histogram(), _histogram()
    for value in VALUES:
        one_by_one.labels("m").observe(value)
    observe_all(batched.labels("m"), VALUES[:5])
    observe_all(batched.labels("m"), VALUES[5:])
    assert _samples(batched) == pytest.approx(_samples(one_by_one))


def test_a_histogram_without_the_expected_internals_is_observed_value_by_value():
    class Recorder:
        def __init__(self):
            self.values = []

        def observe(self, value):
            self.values.append(value)

    recorder = Recorder()
    observe_all(recorder, VALUES)
    assert recorder.values == VALUES


def test_a_histogram_without_labels_applied_is_refused_as_observe_refuses_it():
    histogram = _histogram()
    with pytest.raises(ValueError):
        histogram.observe(0.1)
    with pytest.raises(ValueError):
        observe_all(histogram, [0.1])
