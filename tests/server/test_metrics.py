"""Prometheus metrics on the metrics port: Triton's names, per model and version, exact counts."""

import urllib.request

import numpy as np
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException


def _scrape(url: str) -> tuple[str, dict]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (family.name, tuple(sorted(sample.labels.items())))
            values[key] = sample.value
    return text, values


def _value(values: dict, name: str, **labels) -> float:
    return values[(name, tuple(sorted(labels.items())))]


def _scale(client, rows: int):
    tensor = httpclient.InferInput("X", [rows, 2], "FP32")
    tensor.set_data_from_numpy(np.ones((rows, 2), np.float32))
    return client.infer("batched_scale", [tensor])


def test_counters_follow_requests_and_batch_rows(example_server, client):
    _, before = _scrape(example_server.metrics_url)
    labels = {"model": "batched_scale", "version": "1"}
    _scale(client, 3)
    _scale(client, 5)
    text, after = _scrape(example_server.metrics_url)
    assert (
        _value(after, "nv_inference_request_success", **labels)
        - _value(before, "nv_inference_request_success", **labels)
        == 2
    )
    assert _value(after, "nv_inference_count", **labels) - _value(before, "nv_inference_count", **labels) == 8
    assert _value(after, "nv_inference_exec_count", **labels) - _value(before, "nv_inference_exec_count", **labels) == 2
    assert _value(after, "nv_inference_request_duration_us", **labels) >= _value(
        before, "nv_inference_request_duration_us", **labels
    )
    assert _value(after, "nv_inference_pending_request_count", **labels) == 0


def test_names_and_types_are_tritons(example_server):
    text, _ = _scrape(example_server.metrics_url)
    assert "# TYPE nv_inference_request_success counter" in text
    assert "# TYPE nv_inference_pending_request_count gauge" in text
    triton_lines = [line for line in text.splitlines() if "nv_inference" in line]
    assert triton_lines and not any("_total" in line for line in triton_lines)
    for name in (
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
    ):
        assert f'{name}{{model="add_sub",version="1"}}' in text


def test_failures_are_counted_by_reason_and_not_as_success(example_server, client):
    _, before = _scrape(example_server.metrics_url)
    labels = {"model": "batched_scale", "version": "1"}
    failure = {"model": "batched_scale", "reason": "BACKEND", "version": "1"}
    rejected = httpclient.InferInput("X", [9, 2], "FP32")  # over max_batch_size: refused before the model
    rejected.set_data_from_numpy(np.ones((9, 2), np.float32))
    try:
        client.infer("batched_scale", [rejected])
    except InferenceServerException:
        pass
    _, after = _scrape(example_server.metrics_url)
    assert _value(after, "nv_inference_request_success", **labels) == _value(
        before, "nv_inference_request_success", **labels
    )
    assert _value(after, "nv_inference_request_failure", **failure) == _value(
        before, "nv_inference_request_failure", **failure
    )
