"""Tensors as raw bytes, the form both the HTTP binary extension and gRPC raw contents use."""

from __future__ import annotations

import math

import numpy as np

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.tensors.bytes_codec import deserialize_bytes_tensor, serialize_bytes_tensor
from modelgate.core.tensors.datatypes import DataType


def array_from_raw(
    buffer, datatype: DataType, shape: tuple[int, ...], where: str, offset: int = 0, size: int | None = None
) -> np.ndarray:
    """`size` bytes of `buffer` from `offset` as an array of `shape`.

    Fixed-size types are a numpy view of the buffer (no copy); BYTES are parsed. Raises
    InvalidArgumentError when the byte count does not fit the shape.
    """
    size = len(buffer) - offset if size is None else size
    count = math.prod(shape)
    if datatype.is_bytes:
        view = memoryview(buffer)[offset : offset + size]
        return deserialize_bytes_tensor(view, count, where).reshape(shape)
    expected = count * datatype.itemsize
    if size != expected:
        raise InvalidArgumentError(
            f"{where}: has {size} bytes of data but shape {list(shape)} of {datatype.wire_name} needs {expected}"
        )
    return np.frombuffer(buffer, dtype=datatype.numpy_dtype, count=count, offset=offset).reshape(shape)


def array_to_raw(array: np.ndarray, datatype_name: str) -> bytes:
    """The array's elements in row-major order: little-endian values, or length-prefixed BYTES."""
    if datatype_name == "BYTES":
        return serialize_bytes_tensor(array)
    return np.ascontiguousarray(array).tobytes()
