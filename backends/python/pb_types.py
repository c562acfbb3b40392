"""Triton datatype codes and names as the python backend API exposes them, and its exception type."""

from __future__ import annotations

import numpy as np

from modelgate.core.tensors import datatypes

TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
    "TYPE_BF16": datatypes.BY_WIRE_NAME["BF16"].numpy_dtype.type,
}

# TRITONSERVER_DataType numbers, as returned by Tensor.triton_dtype().
_WIRE_TO_CODE = {
    "BOOL": 1,
    "UINT8": 2,
    "UINT16": 3,
    "UINT32": 4,
    "UINT64": 5,
    "INT8": 6,
    "INT16": 7,
    "INT32": 8,
    "INT64": 9,
    "FP16": 10,
    "FP32": 11,
    "FP64": 12,
    "BYTES": 13,
    "BF16": 14,
}
_CODE_TO_WIRE = {code: wire for wire, code in _WIRE_TO_CODE.items()}


def triton_string_to_numpy(triton_type_string: str):
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def triton_to_numpy_type(data_type: int):
    wire = _CODE_TO_WIRE.get(data_type)
    if wire is None:
        return None
    if wire == "BOOL":
        return np.bool_
    return datatypes.BY_WIRE_NAME[wire].numpy_dtype.type


def numpy_to_triton_type(data_type) -> int | None:
    try:
        return _WIRE_TO_CODE[datatypes.from_numpy_dtype(np.dtype(data_type)).wire_name]
    except Exception:
        return None


class TritonModelException(Exception):
    """Raised by this API for misuse; a model may raise it too."""

    def message(self) -> str:
        return str(self)
