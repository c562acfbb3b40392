"""Tensor data in KServe v2 JSON: nested or flat lists in row-major order."""

from __future__ import annotations

import math

import numpy as np

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.tensors.datatypes import DataType

_ALLOWED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


def json_to_array(data, datatype: DataType, shape: tuple[int, ...], where: str) -> np.ndarray:
    """`data` (a JSON list) as an array of `shape`; errors name `where` and what was wrong."""
    if not isinstance(data, list):
        raise InvalidArgumentError(f"{where}: 'data' must be a JSON array, got {type(data).__name__}")
    if datatype.is_bytes:
        array = _bytes_array(data, where)
    else:
        array = _numeric_array(data, datatype, where)
    expected = math.prod(shape)
    if array.size != expected:
        raise InvalidArgumentError(
            f"{where}: has {array.size} elements in 'data' but shape {list(shape)} needs {expected}"
        )
    return array.reshape(shape)


def array_to_json(array: np.ndarray) -> list:
    """Flat row-major list; BYTES elements as UTF-8 strings (caller checks they decode)."""
    flat = array.reshape(-1)
    if flat.dtype == object:  # tolist() first: iterating a numpy array boxes each element (4x slower)
        return [e.decode("utf-8") if isinstance(e, (bytes, bytearray)) else str(e) for e in flat.tolist()]
    if flat.dtype.kind == "V":  # bfloat16 and the float8 types (ml_dtypes): numbers JSON can hold as floats
        return flat.astype(np.float32).tolist()
    return flat.tolist()


def bytes_are_utf8(array: np.ndarray) -> bool:
    try:
        for element in array.reshape(-1):
            if isinstance(element, (bytes, bytearray)):
                element.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _numeric_array(data: list, datatype: DataType, where: str) -> np.ndarray:
    target = datatype.numpy_dtype
    if target.kind == "f" and all(type(e) is float for e in data):
        # The usual float tensor, flat and all JSON floats (no bool, int, string or nested list): nothing below
        # could refuse it, and one conversion straight to the target type costs a third of the checked path.
        return np.array(data, dtype=target)
    try:
        raw = np.array(data)
    except ValueError:
        raise InvalidArgumentError(f"{where}: 'data' is a ragged nested array") from None
    kind = datatype.numpy_dtype.kind
    if kind in "iu" and raw.dtype.kind == "f" and _all_integers(data):
        # numpy makes float64 of ints that fit no one integer dtype ([-1, 2**63], [0, 2**64 - 1]),
        # losing precision; keep the exact Python ints and let the cast check the range.
        raw = np.array(data, dtype=object)
    allowed = _ALLOWED_KINDS.get(kind, "iuf")
    mixes_booleans = kind != "b" and raw.dtype.kind != "b" and _has_boolean(data)
    if mixes_booleans or (raw.size and raw.dtype.kind not in allowed and not (raw.dtype.kind == "O" and kind in "iu")):
        expected = {"b": "true/false", "i": "integers", "u": "integers"}.get(kind, "numbers")
        raise InvalidArgumentError(f"{where}: 'data' must hold {expected} for {datatype.wire_name}")
    try:
        return _cast_checked(raw, datatype)
    except (OverflowError, ValueError, TypeError):
        raise InvalidArgumentError(f"{where}: 'data' has values out of range for {datatype.wire_name}") from None


def _has_boolean(data: list) -> bool:
    """JSON true/false among numbers: numpy would silently turn them into 1/0."""
    return any(isinstance(e, bool) for e in _flatten(data))


def _all_integers(data: list) -> bool:
    return all(isinstance(e, int) and not isinstance(e, bool) for e in _flatten(data))


def _cast_checked(raw: np.ndarray, datatype: DataType) -> np.ndarray:
    target = datatype.numpy_dtype
    if target.kind in "iu" and raw.size:
        if raw.dtype.kind == "O":
            return np.array(raw.tolist(), dtype=target)
        info = np.iinfo(target)
        if raw.min() < info.min or raw.max() > info.max:
            raise OverflowError
    return raw.astype(target)


def _bytes_array(data: list, where: str) -> np.ndarray:
    flat = _flatten(data)
    out = np.empty(len(flat), dtype=object)
    for index, element in enumerate(flat):
        if not isinstance(element, str):
            raise InvalidArgumentError(f"{where}: BYTES 'data' elements must be strings, element {index} is not")
        out[index] = element.encode("utf-8")
    return out


def _flatten(data: list) -> list:
    if not any(isinstance(e, list) for e in data):
        return data
    flat: list = []
    stack = [iter(data)]
    while stack:
        for element in stack[-1]:
            if isinstance(element, list):
                stack.append(iter(element))
                break
            flat.append(element)
        else:
            stack.pop()
    return flat
