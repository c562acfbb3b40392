"""The `add_sub` request as the benchmarks send it, and the checks that its answers are right.

Two HTTP encodings of the same request (plain KServe v2 JSON, binary tensor extension), one POST
that records the answer as it went over the wire (the bytes the bare peer then replays), the same
request as a gRPC `ModelInferRequest`, and checks with tritonclient against numpy's sum and
difference.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2

from benchmarks.bare_http_peer import HEADER_LENGTH, FixedResponse

MODEL = "add_sub"
INFER_PATH = f"/v2/models/{MODEL}/infer"
INPUT0 = np.array([1.0, 2.0, 3.0, 4.0], dtype="<f4")
INPUT1 = np.array([0.5, 0.25, -1.0, 8.0], dtype="<f4")


@dataclass(frozen=True)
class Encoding:
    """One way to send the `add_sub` request: the exact body and headers every request carries."""

    name: str
    body: bytes
    headers: dict[str, str]


def json_encoding() -> Encoding:
    """The plain KServe v2 JSON request; the answer is JSON too."""
    inputs = [_json_input("INPUT0", INPUT0), _json_input("INPUT1", INPUT1)]
    body = json.dumps({"inputs": inputs}, separators=(",", ":")).encode()
    return Encoding("json", body, {"Content-Type": "application/json"})


def binary_encoding() -> Encoding:
    """JSON header + raw little-endian FP32 bytes; binary outputs asked for, as tritonclient does."""
    inputs = [_binary_input("INPUT0", INPUT0), _binary_input("INPUT1", INPUT1)]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}, separators=(",", ":"))
    body = header.encode() + INPUT0.tobytes() + INPUT1.tobytes()
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return Encoding("binary", body, headers)


def _json_input(name: str, values: np.ndarray) -> dict:
    return {"name": name, "datatype": "FP32", "shape": list(values.shape), "data": values.tolist()}


def _binary_input(name: str, values: np.ndarray) -> dict:
    return {
        "name": name,
        "datatype": "FP32",
        "shape": list(values.shape),
        "parameters": {"binary_data_size": values.nbytes},
    }


def post(port: int, encoding: Encoding) -> FixedResponse:
    """Send `encoding`'s exact bytes once; raise unless the answer is 200; the answer as it went over the wire."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", INFER_PATH, body=encoding.body, headers=encoding.headers)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"POST {INFER_PATH} ({encoding.name}) answered {response.status}: {body[:300]!r}")
    header_length = response.getheader(HEADER_LENGTH)
    return FixedResponse(
        body,
        response.getheader("Content-Type", "").split(";")[0],
        None if header_length is None else int(header_length),
    )


def check_outputs(response: FixedResponse, encoding: Encoding) -> None:
    """Decode with tritonclient and compare with numpy's sum and difference."""
    result = httpclient.InferenceServerClient.parse_response_body(response.body, header_length=response.header_length)
    assert_sum_and_difference(result)
    is_binary = response.header_length is not None
    if is_binary != (encoding.name == "binary"):
        raise AssertionError(f"{encoding.name} request got a {'binary' if is_binary else 'JSON'} response")


def check_with_tritonclient(port: int) -> None:
    """One real tritonclient.http infer per encoding, as a user would call the server."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    for binary in (False, True):
        inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(INPUT0, binary_data=binary)
        inputs[1].set_data_from_numpy(INPUT1, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
        assert_sum_and_difference(client.infer(MODEL, inputs, outputs=outputs))
    client.close()


def grpc_request() -> service_pb2.ModelInferRequest:
    """The request as tritonclient.grpc sends it: raw little-endian contents, no outputs named (all come back)."""
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    for name, values in (("INPUT0", INPUT0), ("INPUT1", INPUT1)):
        request.inputs.add(name=name, datatype="FP32", shape=list(values.shape))
        request.raw_input_contents.append(values.tobytes())
    return request


def check_grpc_answer(serialized: bytes) -> None:
    """Decode a serialized `ModelInferResponse` with tritonclient and compare with numpy's sum and difference."""
    assert_sum_and_difference(grpcclient.InferResult(service_pb2.ModelInferResponse.FromString(serialized)))


def check_with_tritonclient_grpc(port: int) -> None:
    """One real tritonclient.grpc infer, as a user would call the server."""
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [grpcclient.InferInput("INPUT0", [4], "FP32"), grpcclient.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(INPUT0)
    inputs[1].set_data_from_numpy(INPUT1)
    assert_sum_and_difference(client.infer(MODEL, inputs))
    client.close()


def assert_sum_and_difference(result) -> None:
    """`result` (a tritonclient HTTP or gRPC InferResult) holds OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), INPUT0 + INPUT1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), INPUT0 - INPUT1)
