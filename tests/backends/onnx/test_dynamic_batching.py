"""Dynamic batches of ONNX requests: one run over the joined inputs, outputs split back per request."""

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import modelgate.backends.onnx.model_instance as model_instance
from tests.backends.onnx.io_helpers import http_input, reference


@pytest.fixture
def runs(monkeypatch):
    """The inputs of every ONNX Runtime run: name -> shape, one dict per run."""
    recorded = []
    real_run = model_instance.run_session

    def recording_run(session, feeds, output_names, bf16_outputs):
        recorded.append(({name: array.shape for name, array in feeds.items()}, list(output_names)))
        return real_run(session, feeds, output_names, bf16_outputs)

    monkeypatch.setattr(model_instance, "run_session", recording_run)
    return recorded


def send_together(http, model: str, inputs_per_request: list, outputs_per_request=None):
    outputs_per_request = outputs_per_request or [None] * len(inputs_per_request)
    pending = [
        http.async_infer(model, inputs, outputs=outputs)
        for inputs, outputs in zip(inputs_per_request, outputs_per_request)
    ]
    results = []
    for request in pending:
        try:
            results.append(request.get_result())
        except InferenceServerException as exc:
            results.append(exc)
    return results


def execution_count(http, model: str) -> int:
    return http.get_inference_statistics(model)["model_stats"][0]["execution_count"]


def test_concurrent_requests_run_once_and_each_gets_its_rows(http, runs):
    rng = np.random.default_rng(7)
    batches = [rng.standard_normal((size, 4)).astype(np.float32) for size in (1, 2, 3, 2)]  # 8 rows: max_batch_size
    before = execution_count(http, "batched")
    results = send_together(http, "batched", [[http_input("INPUT", x, "FP32")] for x in batches])
    assert runs == [({"INPUT": (8, 4)}, ["OUTPUT"])]
    for x, result in zip(batches, results):
        (expected,) = reference("simple", {"INPUT": x})
        np.testing.assert_allclose(result.as_numpy("OUTPUT"), expected, rtol=1e-6)
    assert execution_count(http, "batched") == before + 1
    stats = http.get_inference_statistics("batched")["model_stats"][0]
    assert {"batch_size": 8} in [{"batch_size": row["batch_size"]} for row in stats["batch_stats"]]


def test_one_bad_request_of_a_batch_fails_alone(http, runs):
    texts = [
        np.array([[b"a", b"b"]], np.object_),
        np.array([[b"\xff", b"c"]], np.object_),
        np.array([[b"d", b"e"]], np.object_),
    ]
    results = send_together(http, "strings_batched", [[http_input("INPUT", t, "BYTES")] for t in texts])
    assert results[0].as_numpy("OUTPUT").tolist() == texts[0].tolist()
    assert isinstance(results[1], InferenceServerException) and "not UTF-8" in results[1].message()
    assert results[2].as_numpy("OUTPUT").tolist() == texts[2].tolist()
    assert runs == [({"INPUT": (2, 2)}, ["OUTPUT"])]  # the two good requests, joined


def test_requests_of_a_batch_get_only_the_outputs_they_asked_for(http, runs):
    x = [np.array([[1, 2]], np.float32), np.array([[3, 4]], np.float32)]
    asked = [[httpclient.InferRequestedOutput("ROWS")], [httpclient.InferRequestedOutput("SUM")]]
    results = send_together(http, "two_outputs_batched", [[http_input("X", a, "FP32")] for a in x], asked)
    assert runs == [({"X": (2, 2)}, ["SUM", "ROWS"])]
    assert [o["name"] for o in results[0].get_response()["outputs"]] == ["ROWS"]
    assert [o["name"] for o in results[1].get_response()["outputs"]] == ["SUM"]
    np.testing.assert_array_equal(results[0].as_numpy("ROWS"), [[3]])
    np.testing.assert_array_equal(results[1].as_numpy("SUM"), [[6, 8]])
