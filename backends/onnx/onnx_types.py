"""ONNX Runtime's type strings ("tensor(float)") and ModelConfig data types ("TYPE_FP32").

numpy has no bfloat16 and ONNX Runtime does not take ml_dtypes' one, so BF16 tensors travel
as uint16 bit patterns inside OrtValues (see ort_run.py); every other type is a plain numpy
array. ONNX strings are Python `str`; the server's BYTES elements are `bytes`, so they are
decoded/encoded as UTF-8 at this boundary.
"""

from __future__ import annotations

import numpy as np

from modelgate.core.errors import InvalidArgumentError

# ONNX Runtime NodeArg.type -> ModelConfig DataType name.
CONFIG_TYPE_BY_ORT_TYPE: dict[str, str] = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(bfloat16)": "TYPE_BF16",
    "tensor(string)": "TYPE_STRING",
}

BF16_ONNX_ELEMENT_TYPE = 16  # onnx.TensorProto.BFLOAT16


def config_type_of(ort_type: str) -> str | None:
    """The ModelConfig type name for an ORT type string; None for types Triton cannot carry."""
    return CONFIG_TYPE_BY_ORT_TYPE.get(ort_type)


def to_onnx_strings(data: np.ndarray, where: str) -> np.ndarray:
    """BYTES elements (bytes) as the `str` objects ONNX Runtime wants; non-UTF-8 is the caller's error."""
    flat = data.reshape(-1)
    strings = np.empty(flat.shape, dtype=object)
    for index, element in enumerate(flat):
        strings[index] = _decoded(element, where, index)
    return strings.reshape(data.shape)


def from_onnx_strings(data: np.ndarray) -> np.ndarray:
    """An ONNX string output as the server's BYTES form: an object array of UTF-8 bytes."""
    flat = data.reshape(-1)
    encoded = np.empty(flat.shape, dtype=object)
    for index, element in enumerate(flat):
        encoded[index] = element.encode("utf-8") if isinstance(element, str) else bytes(element)
    return encoded.reshape(data.shape)


def _decoded(element, where: str, index: int) -> str:
    if isinstance(element, str):
        return element
    try:
        return bytes(element).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"{where}: element {index} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "ONNX tensor(string) inputs hold UTF-8 strings"
        ) from None
