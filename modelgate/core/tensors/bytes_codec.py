"""BYTES tensors on the wire: each element is a 4-byte little-endian length then its bytes."""

from __future__ import annotations

import struct

import numpy as np

from modelgate.core.errors import InvalidArgumentError

_LENGTH = struct.Struct("<I")


def element_as_bytes(element) -> bytes:
    """One BYTES element as bytes: bytes pass through, anything else is UTF-8 of its str()."""
    if isinstance(element, (bytes, bytearray, memoryview)):
        return bytes(element)
    if isinstance(element, np.bytes_):
        return bytes(element)
    return str(element).encode("utf-8")


def serialize_bytes_tensor(array: np.ndarray) -> bytes:
    """Serialize the elements of `array` (C order) as length-prefixed bytes."""
    parts = []
    for element in array.reshape(-1):
        data = element_as_bytes(element)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(buffer, expected_count: int | None, where: str) -> np.ndarray:
    """Parse length-prefixed elements into a 1-D object array of bytes.

    Raises InvalidArgumentError if a length runs past the buffer or, when `expected_count`
    is given, if the number of elements differs from it.
    """
    view = memoryview(buffer)
    elements = []
    offset = 0
    total = len(view)
    while offset < total:
        if offset + 4 > total:
            raise InvalidArgumentError(f"{where}: truncated BYTES element length at byte {offset}")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > total:
            raise InvalidArgumentError(
                f"{where}: BYTES element of {length} bytes at byte {offset - 4} runs past the "
                f"end of the {total}-byte buffer"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if expected_count is not None and len(elements) != expected_count:
        raise InvalidArgumentError(
            f"{where}: expected {expected_count} BYTES elements for its shape, got {len(elements)}"
        )
    result = np.empty(len(elements), dtype=object)
    result[:] = elements
    return result
