"""ONNX models served through tritonclient.http and tritonclient.grpc: outputs, configs, types, errors."""

import functools

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.backends.onnx.io_helpers import grpc_input, http_input, onnx_instances, reference

# -- outputs --------------------------------------------------------------------------------


def test_simple_onnx_equals_onnxruntime_over_http_and_grpc(http, grpc):
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    (expected,) = reference("simple", {"INPUT": x})
    for binary in (False, True):
        result = http.infer("simple_onnx", [http_input("INPUT", x, "FP32", binary)])
        np.testing.assert_allclose(result.as_numpy("OUTPUT"), expected, rtol=1e-6)
    result = grpc.infer("simple_onnx", [grpc_input("INPUT", x, "FP32")])
    np.testing.assert_allclose(result.as_numpy("OUTPUT"), expected, rtol=1e-6)


def test_the_session_runs_on_the_cpu_provider_for_a_cpu_instance(onnx_server):
    (instance,) = onnx_instances(onnx_server, "simple_onnx")
    assert instance.providers == ["CPUExecutionProvider"]


def test_requested_outputs_are_filtered(http, grpc):
    x = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32)
    result = http.infer("two_outputs", [http_input("X", x, "FP32")], outputs=[httpclient.InferRequestedOutput("ROWS")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["ROWS"]
    np.testing.assert_array_equal(result.as_numpy("ROWS"), [[3], [7], [11]])
    result = grpc.infer("two_outputs", [grpc_input("X", x, "FP32")])
    assert sorted(o.name for o in result.get_response().outputs) == ["ROWS", "SUM"]
    np.testing.assert_array_equal(result.as_numpy("SUM"), x * 2)


def test_compute_timings_are_recorded(http):
    x = np.ones((1, 4), dtype=np.float32)
    http.infer("simple_onnx", [http_input("INPUT", x, "FP32")])
    stats = http.get_inference_statistics("simple_onnx")["model_stats"][0]["inference_stats"]
    assert stats["success"]["count"] >= 1
    assert stats["compute_infer"]["ns"] > 0 and stats["compute_input"]["ns"] > 0 and stats["compute_output"]["ns"] > 0


# -- types ----------------------------------------------------------------------------------


def test_strings_round_trip_as_bytes_over_http_and_grpc(http, grpc):
    words = np.array([["h\u00e9llo".encode(), b""], ["\u65e5\u672c\U0001f600".encode(), b"a b"]], dtype=np.object_)
    for binary in (False, True):
        result = http.infer("strings", [http_input("INPUT", words, "BYTES", binary)])
        assert result.as_numpy("OUTPUT").tolist() == words.tolist()
    result = grpc.infer("strings", [grpc_input("INPUT", words, "BYTES")])
    assert result.as_numpy("OUTPUT").tolist() == words.tolist()
    assert grpc.get_model_metadata("strings").outputs[0].datatype == "BYTES"


@pytest.mark.parametrize(
    "graph, datatype, data",
    [
        ("fp16", "FP16", np.array([[-65504.0, 0.5, np.inf]], dtype=np.float16)),
        ("bf16", "BF16", np.array([[1.5, -2.25, 3.0e38], [0.0, -0.0, 7.0]], dtype=ml_dtypes.bfloat16)),
        ("int64", "INT64", np.array([[-(2**63), 0, 2**63 - 1]], dtype=np.int64)),
    ],
)
def test_fixed_width_types_round_trip_bit_for_bit(grpc, graph, datatype, data):
    result = grpc.infer(graph, [grpc_input("INPUT", data, datatype)])
    got = result.as_numpy("OUTPUT")
    assert got.dtype == data.dtype
    np.testing.assert_array_equal(got.view(np.uint8), data.view(np.uint8))


# -- configs --------------------------------------------------------------------------------


def test_auto_completed_config_over_http_and_grpc(http, grpc):
    config = http.get_model_config("simple_onnx")
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == 4
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("INPUT", "TYPE_FP32", [4])]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [("OUTPUT", "TYPE_FP32", [4])]
    assert "dynamic_batching" in config
    message = grpc.get_model_config("simple_onnx").config
    assert message.platform == "onnxruntime_onnx" and message.max_batch_size == 4
    assert [(t.name, list(t.dims)) for t in message.input] == [("INPUT", [4])]
    metadata = http.get_model_metadata("simple_onnx")
    assert metadata["inputs"] == [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 4]}]


def test_partial_config_is_completed_in_the_server(http):
    config = http.get_model_config("partial")
    assert config["max_batch_size"] == 8
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("X", "TYPE_FP32", [2])]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [("ROWS", "TYPE_FP32", [1])]
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    result = http.infer("partial", [http_input("X", x, "FP32")])
    np.testing.assert_array_equal(result.as_numpy("ROWS"), x.sum(axis=1, keepdims=True))


def test_unbatchable_graph_gets_full_shapes(http):
    config = http.get_model_config("fixed_batch")
    assert config.get("max_batch_size", 0) == 0
    assert config["input"][0]["dims"] == [2, 3]


@pytest.mark.parametrize(
    "name, fragments",
    [
        ("wrong_type", ["wrong_type/config.pbtxt", "field 'input[0].data_type'", "TYPE_INT32", "has TYPE_FP32"]),
        ("wrong_dims", ["wrong_dims/config.pbtxt", "field 'output[0].dims'", "[3]", "has [4]"]),
        ("cannot_batch", ["cannot_batch/config.pbtxt", "field 'max_batch_size'", "cannot batch"]),
    ],
)
def test_contradicting_configs_are_unavailable_with_the_named_field(http, grpc, name, fragments):
    rows = {row["name"]: row for row in http.get_model_repository_index()}
    assert rows[name]["state"] == "UNAVAILABLE"
    for fragment in fragments:
        assert fragment in rows[name]["reason"]
    grpc_rows = {row.name: row for row in grpc.get_model_repository_index().models}
    assert grpc_rows[name].reason == rows[name]["reason"]
    assert not http.is_model_ready(name)


# -- bad requests ---------------------------------------------------------------------------


def assert_400(call, fragment: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == "400", caught.value
    assert fragment in caught.value.message()


def simple(data: np.ndarray, datatype: str = "FP32"):
    return lambda http: http.infer("simple_onnx", [http_input("INPUT", data, datatype)])


def test_bad_requests_are_400_and_the_server_keeps_serving(http, grpc):
    good = np.ones((2, 4), dtype=np.float32)
    not_utf8 = np.array([[b"\xff\xfe", b"ok"]], np.object_)
    cases = [
        (simple(good.astype(np.float64), "FP64"), "expected FP32"),
        (simple(np.ones((2, 5), np.float32)), "expected [-1, 4]"),
        (simple(np.ones((5, 4), np.float32)), "max_batch_size 4"),
        (lambda http: http.infer("strings", [http_input("INPUT", not_utf8, "BYTES")]), "not UTF-8"),
        (
            lambda http: http.infer(
                "reshape",
                [
                    http_input("DATA", np.ones(6, np.float32), "FP32"),
                    http_input("SHAPE", np.array([4, 4], np.int64), "INT64"),
                ],
            ),
            "(ONNX Runtime) failed",
        ),
    ]
    for call, fragment in cases:
        assert_400(functools.partial(call, http), fragment)
        result = http.infer("simple_onnx", [http_input("INPUT", good, "FP32")])
        assert result.as_numpy("OUTPUT").shape == (2, 4)
    with pytest.raises(InferenceServerException) as caught:
        grpc.infer(
            "reshape",
            [
                grpc_input("DATA", np.ones(6, np.float32), "FP32"),
                grpc_input("SHAPE", np.array([4, 4], np.int64), "INT64"),
            ],
        )
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    fine = grpc.infer(
        "reshape",
        [
            grpc_input("DATA", np.arange(6, dtype=np.float32), "FP32"),
            grpc_input("SHAPE", np.array([2, 3], np.int64), "INT64"),
        ],
    )
    np.testing.assert_array_equal(fine.as_numpy("OUT"), np.arange(6, dtype=np.float32).reshape(2, 3))
