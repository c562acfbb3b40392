"""BYTES tensors on the wire: 4-byte little-endian length, then the bytes."""

import numpy as np
import pytest

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.tensors.bytes_codec import deserialize_bytes_tensor, serialize_bytes_tensor


def test_round_trip_of_empty_unicode_and_binary_elements():
    elements = np.array([[b"", "日本".encode()], [b"\x00\xff\x10", b"abc"]], dtype=object)
    wire = serialize_bytes_tensor(elements)
    assert wire[:4] == b"\x00\x00\x00\x00"
    assert wire[4:8] == (6).to_bytes(4, "little")
    back = deserialize_bytes_tensor(wire, 4, "T")
    assert list(back) == list(elements.reshape(-1))


def test_str_elements_are_utf8_encoded():
    assert serialize_bytes_tensor(np.array(["é"], dtype=object)) == b"\x02\x00\x00\x00\xc3\xa9"


def test_numpy_str_arrays_and_byte_buffers_are_written_as_their_bytes():
    assert serialize_bytes_tensor(np.array(["ab", "é"])) == b"\x02\x00\x00\x00ab\x02\x00\x00\x00\xc3\xa9"
    buffers = np.empty(2, dtype=object)
    buffers[:] = [bytearray(b"ab"), memoryview(b"cd")]
    assert serialize_bytes_tensor(buffers) == b"\x02\x00\x00\x00ab\x02\x00\x00\x00cd"


def test_elements_of_equal_length_stay_one_element_each():
    back = deserialize_bytes_tensor(serialize_bytes_tensor(np.array([b"ab", b"cd"], dtype=object)), 2, "T")
    assert back.shape == (2,) and list(back) == [b"ab", b"cd"]


@pytest.mark.parametrize(
    "wire, count, fragment",
    [
        (b"\x05\x00\x00\x00abc", None, "runs past the end"),
        (b"\x01\x00", None, "truncated"),
        (b"\x01\x00\x00\x00a", 2, "expected 2 BYTES elements"),
    ],
)
def test_malformed_buffers_are_invalid_arguments(wire, count, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        deserialize_bytes_tensor(wire, count, "input 'T'")
