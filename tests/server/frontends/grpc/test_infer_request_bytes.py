"""ModelInferRequest decoded with its raw contents left in the received bytes: the same request protobuf
decodes, without copies of large contents; anything this scan does not read goes to protobuf."""

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from modelgate.server.frontends.grpc.infer_codec import decode_infer_request
from modelgate.server.frontends.grpc.infer_request_bytes import (
    LARGE_CONTENTS_BYTES,
    InferRequestWithViews,
    parse_infer_request,
)


def _request(*arrays: np.ndarray) -> service_pb2.ModelInferRequest:
    message = service_pb2.ModelInferRequest(model_name="resnet", model_version="2", id="r1")
    message.parameters["priority"].int64_param = 3
    for index, array in enumerate(arrays):
        tensor = message.inputs.add(name=f"INPUT{index}", datatype="FP32", shape=list(array.shape))
        tensor.parameters["binary_data"].bool_param = True
        message.raw_input_contents.append(array.tobytes())
    message.outputs.add(name="OUTPUT0")
    return message


def test_large_contents_are_views_of_the_received_bytes_and_decode_as_protobuf_would():
    images = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)  # 96 KiB
    small = np.arange(3, dtype=np.float32)
    message = _request(images, small)
    raw = message.SerializeToString()
    parsed = parse_infer_request(raw)
    assert isinstance(parsed, InferRequestWithViews)
    assert all(isinstance(view, memoryview) and view.obj is raw for view in parsed.raw_input_contents)
    ours, theirs = decode_infer_request(parsed), decode_infer_request(service_pb2.ModelInferRequest.FromString(raw))
    assert (ours.model_name, ours.model_version, ours.id, ours.parameters) == (
        theirs.model_name,
        theirs.model_version,
        theirs.id,
        theirs.parameters,
    )
    assert [o.name for o in ours.outputs] == ["OUTPUT0"]
    for name, expected in (("INPUT0", images), ("INPUT1", small)):
        assert ours.inputs[name].parameters == theirs.inputs[name].parameters
        np.testing.assert_array_equal(ours.inputs[name].data, expected)


def test_small_requests_are_plain_protobuf_messages():
    raw = _request(np.arange(8, dtype=np.float32)).SerializeToString()
    assert len(raw) < LARGE_CONTENTS_BYTES
    assert isinstance(parse_infer_request(raw), service_pb2.ModelInferRequest)


def test_large_bytes_with_little_raw_content_are_plain_protobuf_messages():
    message = _request(np.arange(4, dtype=np.float32))
    message.id = "x" * LARGE_CONTENTS_BYTES  # large, but not in raw contents
    parsed = parse_infer_request(message.SerializeToString())
    assert isinstance(parsed, service_pb2.ModelInferRequest) and parsed.id == message.id


@pytest.mark.parametrize("cut", [1, 7, 40])
def test_a_truncated_message_raises_protobufs_decode_error(cut):
    raw = _request(np.zeros(LARGE_CONTENTS_BYTES, dtype=np.uint8).view(np.float32)).SerializeToString()
    with pytest.raises(DecodeError):
        parse_infer_request(raw[:-cut])


def test_a_message_with_a_group_or_bad_wire_type_goes_to_protobuf():
    body = _request(np.zeros(LARGE_CONTENTS_BYTES // 4, dtype=np.float32)).SerializeToString()
    with pytest.raises(DecodeError):
        parse_infer_request(bytes([(9 << 3) | 7]) + body)  # wire type 7 does not exist
