"""Every datatype round-trips through identity models, as JSON and as binary tensor data."""

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.server.frontends.http.probe_models import identity_name
from tests.server.frontends.http.raw_http import post_binary, post_json, split_binary_response

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
    "FP16": np.array([[-65504.0, 0.0, 65504.0], [1.5, -0.0009765625, 6.1035156e-05]], dtype=np.float16),
    "FP32": np.array([[-3.4e38, 0.0, 3.4e38], [1.1, -2.5e-30, 0.1]], dtype=np.float32),
    "FP64": np.array([[-1.7e308, 0.0, 1.7e308], [0.1, -5e-324, 1 / 3]], dtype=np.float64),
    "BF16": np.array([[-3.0e38, 0.0, 3.0e38], [1.1, -2.25, 0.1]], dtype=BF16),
    "BYTES": np.array(
        [[b"", b"abc", "h\u00e9llo \u65e5\u672c".encode()], [b"x" * 300, b" ", b"\x01\x02"]], dtype=np.object_
    ),
}
JSON_TYPES = [t for t in SAMPLES if t != "BF16"]  # tritonclient only sends BF16 as binary


def _identity(client, datatype: str, data: np.ndarray, binary_in: bool, binary_out: bool):
    tensor = httpclient.InferInput("INPUT", list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary_in)
    output = httpclient.InferRequestedOutput("OUTPUT", binary_data=binary_out)
    return client.infer(identity_name(datatype), [tensor], outputs=[output])


def _assert_same(datatype: str, got: np.ndarray, sent: np.ndarray) -> None:
    assert got.shape == sent.shape
    if datatype == "BYTES":
        as_bytes = [e if isinstance(e, bytes) else e.encode() for e in got.reshape(-1)]
        assert as_bytes == list(sent.reshape(-1))
    elif datatype == "BF16":
        assert got.dtype == BF16
        np.testing.assert_array_equal(got.view(np.uint16), sent.view(np.uint16))
    else:
        assert got.dtype == sent.dtype
        np.testing.assert_array_equal(got, sent)


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_binary_round_trip(probe_client, datatype):
    result = _identity(probe_client, datatype, SAMPLES[datatype], binary_in=True, binary_out=True)
    assert "binary_data_size" in result.get_output("OUTPUT")["parameters"]
    _assert_same(datatype, result.as_numpy("OUTPUT"), SAMPLES[datatype])


@pytest.mark.parametrize("datatype", JSON_TYPES)
def test_json_round_trip(probe_client, datatype):
    result = _identity(probe_client, datatype, SAMPLES[datatype], binary_in=False, binary_out=False)
    output = result.get_output("OUTPUT")
    assert output["datatype"] == datatype
    assert output["shape"] == [2, 3]
    assert "data" in output and "parameters" not in output
    _assert_same(datatype, result.as_numpy("OUTPUT"), SAMPLES[datatype])


@pytest.mark.parametrize("datatype", JSON_TYPES)
def test_json_in_binary_out_and_back(probe_client, datatype):
    sample = SAMPLES[datatype]
    _assert_same(datatype, _identity(probe_client, datatype, sample, True, False).as_numpy("OUTPUT"), sample)
    _assert_same(datatype, _identity(probe_client, datatype, sample, False, True).as_numpy("OUTPUT"), sample)


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_zero_element_tensors(probe_client, datatype):
    empty = SAMPLES[datatype][:0]  # shape [0, 3]
    for binary in (True, False) if datatype != "BF16" else (True,):
        result = _identity(probe_client, datatype, empty, binary_in=binary, binary_out=binary)
        assert result.get_output("OUTPUT")["shape"] == [0, 3]
        assert result.as_numpy("OUTPUT").shape == (0, 3)


def test_bf16_in_json_through_raw_http(probe_server):
    """BF16 has a JSON form (numbers); values round to the nearest bfloat16."""
    values = [1.5, -2.25, 1.1, 0.0]
    body = {"inputs": [{"name": "INPUT", "datatype": "BF16", "shape": [2, 2], "data": values}]}
    response = post_json(probe_server.http_url, "/v2/models/identity_bf16/infer", body)
    assert response.status == 200
    [output] = response.json()["outputs"]
    assert output["datatype"] == "BF16" and output["shape"] == [2, 2]
    assert output["data"] == [float(np.float32(BF16.type(v))) for v in values]
    assert output["data"][2] == 1.1015625


def test_bf16_binary_bytes_are_passed_through_unchanged(probe_server):
    raw = np.array([0x3FC0, 0xC010, 0x7F80, 0x0001], dtype=np.uint16)  # 1.5, -2.25, inf, a subnormal
    header = {
        "inputs": [{"name": "INPUT", "datatype": "BF16", "shape": [1, 4], "parameters": {"binary_data_size": 8}}],
        "outputs": [{"name": "OUTPUT", "parameters": {"binary_data": True}}],
    }
    response = post_binary(probe_server.http_url, "/v2/models/identity_bf16/infer", header, raw.tobytes())
    assert response.status == 200
    header_out, binary = split_binary_response(response)
    assert header_out["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert binary == raw.tobytes()


def test_fp16_binary_keeps_special_values(probe_client):
    sample = np.array([[np.inf, -np.inf, np.nan, -0.0, 5.96e-08, 65504]], dtype=np.float16)
    got = _identity(probe_client, "FP16", sample, True, True).as_numpy("OUTPUT")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got.view(np.uint16), sample.view(np.uint16))


# -- BYTES ------------------------------------------------------------------------------------


ODD_BYTES = np.array(
    [[b"", "\u00fcnic\u00f6de \U0001f600".encode(), b"\xff\xfe\x80 not utf-8", b"\x00", b"a\x00b\x00", b""]],
    dtype=np.object_,
)


def test_bytes_binary_keeps_empty_unicode_and_arbitrary_bytes(probe_client):
    result = _identity(probe_client, "BYTES", ODD_BYTES, binary_in=True, binary_out=True)
    assert list(result.as_numpy("OUTPUT").reshape(-1)) == list(ODD_BYTES.reshape(-1))


def test_bytes_json_output_of_non_utf8_falls_back_to_binary(probe_client):
    result = _identity(probe_client, "BYTES", ODD_BYTES, binary_in=True, binary_out=False)
    output = result.get_output("OUTPUT")
    assert "data" not in output
    assert output["parameters"]["binary_data_size"] > 0
    assert list(result.as_numpy("OUTPUT").reshape(-1)) == list(ODD_BYTES.reshape(-1))


def test_bytes_json_keeps_unicode_and_empty_strings(probe_client):
    texts = ["", "\u00fcnic\u00f6de \U0001f600", "tab\tnewline\n", "\u0000nul"]
    sample = np.array([[t.encode() for t in texts]], dtype=np.object_)
    result = _identity(probe_client, "BYTES", sample, binary_in=False, binary_out=False)
    assert result.get_output("OUTPUT")["data"] == texts


def test_string_ops_upper_cases_unicode(client):
    text = np.array(["stra\u00dfe", "", "\u00e9t\u00e9"], dtype=np.object_)
    for binary in (False, True):
        tensor = httpclient.InferInput("TEXT", [3], "BYTES").set_data_from_numpy(text, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("UPPER", "LENGTH")]
        result = client.infer("string_ops", [tensor], outputs=outputs)
        upper = [e.decode() if isinstance(e, bytes) else e for e in result.as_numpy("UPPER")]
        assert upper == ["STRASSE", "", "\u00c9T\u00c9"]
        np.testing.assert_array_equal(result.as_numpy("LENGTH"), [7, 0, 5])  # UTF-8 bytes


# -- size -------------------------------------------------------------------------------------


def test_a_32_mib_binary_tensor(probe_client):
    data = np.arange(4096 * 2048, dtype=np.float32).reshape(4096, 2048)  # 32 MiB
    result = _identity(probe_client, "FP32", data, binary_in=True, binary_out=True)
    assert result.get_output("OUTPUT")["parameters"]["binary_data_size"] == data.nbytes
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), data)
