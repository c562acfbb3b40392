"""The statistics extension: /v2/models/stats, /v2/models/NAME/stats, /v2/models/NAME/versions/V/stats.

Counters are cumulative on a session-wide server, so every check compares before and after.
"""

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server.frontends.http.raw_http import send


def _stats(client, name: str, version: str = "") -> dict:
    [entry] = client.get_inference_statistics(name, version)["model_stats"]
    return entry


def _scale(client, rows: int) -> None:
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    inputs = [httpclient.InferInput("X", list(x.shape), "FP32").set_data_from_numpy(x)]
    np.testing.assert_array_equal(client.infer("batched_scale", inputs).as_numpy("Y"), x * 2)


def _flaky(client, values: list[int]):
    x = np.array([values], dtype=np.int32)
    inputs = [httpclient.InferInput("X", list(x.shape), "INT32").set_data_from_numpy(x)]
    return client.infer("flaky", inputs)


def test_all_models_stats_lists_every_loaded_version(client, example_server):
    everything = client.get_inference_statistics()
    names = {(s["name"], s["version"]) for s in everything["model_stats"]}
    assert {("add_sub", "1"), ("batched_scale", "1"), ("string_ops", "1")} <= names
    raw = send(example_server.http_url, "GET", "/v2/models/stats")
    assert raw.status == 200
    assert {(s["name"], s["version"]) for s in raw.json()["model_stats"]} == names


def test_stats_entry_has_tritons_fields(client):
    entry = _stats(client, "add_sub")
    assert entry["name"] == "add_sub" and entry["version"] == "1"
    for key in ("last_inference", "inference_count", "execution_count", "inference_stats", "batch_stats"):
        assert key in entry
    for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert set(entry["inference_stats"][key]) == {"count", "ns"}


def test_inference_count_counts_batch_rows_and_execution_count_executions(client):
    before = _stats(client, "batched_scale")
    _scale(client, 3)
    _scale(client, 5)
    _scale(client, 1)
    after = _stats(client, "batched_scale")
    assert after["inference_count"] - before["inference_count"] == 9
    assert after["execution_count"] - before["execution_count"] == 3
    success_before, success_after = before["inference_stats"]["success"], after["inference_stats"]["success"]
    assert success_after["count"] - success_before["count"] == 3
    assert success_after["ns"] > success_before["ns"]
    assert after["inference_stats"]["fail"] == before["inference_stats"]["fail"]
    assert after["inference_stats"]["queue"]["count"] - before["inference_stats"]["queue"]["count"] == 3
    assert after["inference_stats"]["compute_infer"]["count"] - before["inference_stats"]["compute_infer"]["count"] == 3
    assert after["last_inference"] >= before["last_inference"]
    assert after["last_inference"] > 0


def test_batch_stats_are_kept_per_batch_size(client):
    def batch_counts(entry: dict) -> dict:
        return {b["batch_size"]: b["compute_infer"]["count"] for b in entry["batch_stats"]}

    before = batch_counts(_stats(client, "batched_scale"))
    _scale(client, 7)
    _scale(client, 7)
    _scale(client, 2)
    after = batch_counts(_stats(client, "batched_scale"))
    assert after.get(7, 0) - before.get(7, 0) == 2
    assert after.get(2, 0) - before.get(2, 0) == 1


def test_model_and_version_routes_report_the_same_counters(client, example_server):
    _scale(client, 2)
    by_model = client.get_inference_statistics("batched_scale")
    by_version = client.get_inference_statistics("batched_scale", "1")
    assert by_model == by_version
    raw = send(example_server.http_url, "GET", "/v2/models/batched_scale/versions/1/stats")
    assert raw.status == 200
    assert raw.json()["model_stats"][0]["inference_count"] == by_model["model_stats"][0]["inference_count"]


def test_versioned_stats_count_only_their_version(probe_client):
    def version_counts() -> dict:
        stats = probe_client.get_inference_statistics("two_versions")["model_stats"]
        return {s["version"]: s["inference_count"] for s in stats}

    before = version_counts()
    assert set(before) == {"1", "2"}
    inputs = [httpclient.InferInput("INPUT", [1], "INT32").set_data_from_numpy(np.array([0], dtype=np.int32))]
    assert probe_client.infer("two_versions", inputs, model_version="1").as_numpy("VERSION")[0] == 1
    assert probe_client.infer("two_versions", inputs).as_numpy("VERSION")[0] == 2  # the latest by default
    assert probe_client.infer("two_versions", inputs).as_numpy("VERSION")[0] == 2
    after = version_counts()
    assert after["1"] - before["1"] == 1
    assert after["2"] - before["2"] == 2
    assert _stats(probe_client, "two_versions", "1")["inference_count"] == after["1"]


def test_failed_requests_count_as_fail_not_success(probe_client):
    before = _stats(probe_client, "flaky")
    np.testing.assert_array_equal(_flaky(probe_client, [1, 2]).as_numpy("Y"), [[1, 2]])
    with pytest.raises(InferenceServerException) as refused:
        _flaky(probe_client, [-1, 2])
    assert "flaky refuses negative values" in refused.value.message()
    with pytest.raises(InferenceServerException) as raised:
        _flaky(probe_client, [5000])
    assert "raised ValueError: flaky refuses values over 1000" in raised.value.message()
    after = _stats(probe_client, "flaky")
    fail_before, fail_after = before["inference_stats"]["fail"], after["inference_stats"]["fail"]
    success_before, success_after = before["inference_stats"]["success"], after["inference_stats"]["success"]
    assert fail_after["count"] - fail_before["count"] == 2
    assert success_after["count"] - success_before["count"] == 1
    assert after["inference_count"] - before["inference_count"] == 1  # only the successful row
    assert after["execution_count"] - before["execution_count"] == 3  # every execution


@pytest.mark.parametrize(
    "path, status, fragment",
    [
        ("/v2/models/no_such_model/stats", 404, "unknown model: 'no_such_model'"),
        ("/v2/models/add_sub/versions/5/stats", 404, "Request for unknown model: 'add_sub' version 5 is not found"),
    ],
)
def test_stats_of_missing_targets(client, example_server, path, status, fragment):
    response = send(example_server.http_url, "GET", path)
    assert response.status == status
    assert fragment in response.error
    with pytest.raises(InferenceServerException) as caught:
        client.get_inference_statistics("no_such_model")
    assert caught.value.status() == "404"
