"""ModelInfer: every datatype through identity models, as raw contents (tritonclient) and typed contents."""

import grpc
import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor

from tests.server.frontends.http.probe_models import identity_name

BF16 = np.dtype(ml_dtypes.bfloat16)

# Two rows of three, with each type's extremes where they have any.
SAMPLES = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 1, 255], [7, 128, 254]], dtype=np.uint8),
    "UINT16": np.array([[0, 1, 65535], [7, 32768, 300]], dtype=np.uint16),
    "UINT32": np.array([[0, 1, 2**32 - 1], [7, 2**31, 70000]], dtype=np.uint32),
    "UINT64": np.array([[0, 1, 2**64 - 1], [7, 2**63, 2**40]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127], [-1, 1, 42]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 0, 2**15 - 1], [-1, 1, 42]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [-1, 1, 42]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1], [-1, 1, 2**40]], dtype=np.int64),
    "FP16": np.array([[-65504.0, 0.0, 65504.0], [np.inf, -0.0, 6.1035156e-05]], dtype=np.float16),
    "FP32": np.array([[-3.4e38, 0.0, 3.4e38], [1.1, -2.5e-30, np.nan]], dtype=np.float32),
    "FP64": np.array([[-1.7e308, 0.0, 1.7e308], [0.1, -5e-324, 1 / 3]], dtype=np.float64),
    "BF16": np.array([[-3.0e38, 0.0, 3.0e38], [1.5, -2.25, np.inf]], dtype=BF16),
    # empty, unicode, arbitrary (non-UTF-8, NUL) bytes and a long element
    "BYTES": np.array(
        [[b"", "h\u00e9llo \u65e5\u672c \U0001f600".encode(), b"\x00\xff\x80\xfe"], [b"x" * 1000, b" ", b"\n\x00"]],
        dtype=np.object_,
    ),
}

# The typed `contents` field of each datatype that has one (FP16 and BF16 are raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def assert_same(datatype: str, got: np.ndarray, sent: np.ndarray) -> None:
    assert got.shape == sent.shape
    if datatype == "BYTES":
        assert list(got.reshape(-1)) == list(sent.reshape(-1))
    elif datatype in ("FP16", "BF16", "FP32", "FP64"):
        assert got.dtype == sent.dtype
        width = {2: np.uint16, 4: np.uint32, 8: np.uint64}[sent.dtype.itemsize]
        np.testing.assert_array_equal(got.view(width), sent.view(width))  # bit for bit, NaN included
    else:
        assert got.dtype == sent.dtype
        np.testing.assert_array_equal(got, sent)


def raw_input(datatype: str, data: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("INPUT", list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


def identity_raw(client, datatype: str, data: np.ndarray):
    return client.infer(identity_name(datatype), [raw_input(datatype, data)])


@pytest.mark.parametrize("datatype", list(SAMPLES))
async def test_raw_contents_round_trip(either_client, datatype):
    result = await either_client.infer(identity_name(datatype), [raw_input(datatype, SAMPLES[datatype])])
    output = result.get_response().outputs[0]
    assert (output.name, output.datatype, list(output.shape)) == ("OUTPUT", datatype, [2, 3])
    assert_same(datatype, result.as_numpy("OUTPUT"), SAMPLES[datatype])


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_zero_element_tensors_round_trip(grpc_client, datatype):
    empty = SAMPLES[datatype][:0]
    result = identity_raw(grpc_client, datatype, empty)
    assert list(result.get_response().outputs[0].shape) == [0, 3]
    assert result.as_numpy("OUTPUT").size == 0


def test_a_64_mib_tensor(grpc_client):
    data = np.random.default_rng(7).integers(0, 256, size=(1, 64 << 20), dtype=np.uint8)
    result = identity_raw(grpc_client, "UINT8", data)
    got = result.as_numpy("OUTPUT")
    assert got.shape == data.shape
    assert np.array_equal(got, data)


# -- typed contents, through the generated stub --------------------------------------------------


@pytest.fixture(scope="module")
def stub(grpc_server):
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def typed_request(datatype: str, data: np.ndarray, field: str | None = None) -> service_pb2.ModelInferRequest:
    field = field or CONTENTS_FIELD[datatype]
    request = service_pb2.ModelInferRequest(model_name=identity_name(datatype), id="typed")
    tensor = request.inputs.add(name="INPUT", datatype=datatype, shape=list(data.shape))
    getattr(tensor.contents, field).extend(data.reshape(-1).tolist())
    return request


def output_array(response: service_pb2.ModelInferResponse, sent: np.ndarray) -> np.ndarray:
    """The first output, decoded from raw_output_contents (what the server always sends)."""
    assert len(response.raw_output_contents) == len(response.outputs) == 1
    raw = response.raw_output_contents[0]
    shape = list(response.outputs[0].shape)
    if response.outputs[0].datatype == "BYTES":
        return deserialize_bytes_tensor(raw).reshape(shape)
    return np.frombuffer(raw, dtype=sent.dtype).reshape(shape)


@pytest.mark.parametrize("datatype", list(CONTENTS_FIELD))
def test_typed_contents_round_trip(stub, datatype):
    data = SAMPLES[datatype]
    response = stub.ModelInfer(typed_request(datatype, data), timeout=10)
    assert response.id == "typed"
    assert response.outputs[0].datatype == datatype
    assert_same(datatype, output_array(response, data), data)


def test_typed_contents_of_several_inputs(stub):
    request = service_pb2.ModelInferRequest(model_name="add_sub")
    for name, values in (("INPUT0", [1.5, 2, 3, 4]), ("INPUT1", [0.5, 1, 1, -4])):
        request.inputs.add(name=name, datatype="FP32", shape=[4]).contents.fp32_contents.extend(values)
    request.outputs.add(name="OUTPUT0")
    response = stub.ModelInfer(request, timeout=10)
    assert [o.name for o in response.outputs] == ["OUTPUT0"]
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float32), [2, 3, 4, 0])


@pytest.mark.parametrize(
    "datatype, field, values, fragment",
    [
        ("FP16", "fp32_contents", [1.0] * 6, "FP16 has no typed contents"),
        ("BF16", "fp32_contents", [1.0] * 6, "BF16 has no typed contents"),
        ("INT32", "fp32_contents", [1.0] * 6, "must be in 'int_contents'"),
        ("INT32", "int_contents", [1, 2, 3], "has 3 elements but shape [2, 3] needs 6"),
        ("INT8", "int_contents", [0, 0, 0, 0, 0, 128], "out of range for INT8"),
        ("UINT16", "uint_contents", [0, 0, 0, 0, 0, 65536], "out of range for UINT16"),
    ],
)
def test_bad_typed_contents_are_invalid_argument(stub, datatype, field, values, fragment):
    request = service_pb2.ModelInferRequest(model_name=identity_name(datatype))
    tensor = request.inputs.add(name="INPUT", datatype=datatype, shape=[2, 3])
    getattr(tensor.contents, field).extend(values)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in caught.value.details()
    good = stub.ModelInfer(typed_request("INT32", SAMPLES["INT32"]), timeout=10)
    assert_same("INT32", output_array(good, SAMPLES["INT32"]), SAMPLES["INT32"])


def test_request_parameters_of_every_kind_are_accepted(stub):
    request = typed_request("INT32", SAMPLES["INT32"])
    request.parameters["a_string"].string_param = "s"
    request.parameters["an_int"].int64_param = -3
    request.parameters["a_bool"].bool_param = True
    request.parameters["a_double"].double_param = 0.5
    response = stub.ModelInfer(request, timeout=10)
    assert_same("INT32", output_array(response, SAMPLES["INT32"]), SAMPLES["INT32"])
