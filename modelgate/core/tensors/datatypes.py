"""Triton datatypes: wire names ("FP32"), config names ("TYPE_FP32") and numpy dtypes.

BYTES tensors are numpy object arrays of `bytes`; BF16 uses ml_dtypes' numpy bfloat16 so
every tensor stays a numpy array end to end.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from modelgate.core.errors import InvalidArgumentError


@dataclass(frozen=True)
class DataType:
    wire_name: str  # as in KServe v2 requests: "FP32"
    config_name: str  # as in ModelConfig: "TYPE_FP32"
    numpy_dtype: np.dtype
    itemsize: int  # 0 for BYTES (variable length)

    @property
    def is_bytes(self) -> bool:
        return self.wire_name == "BYTES"


def _fixed(wire: str, dtype) -> DataType:
    dt = np.dtype(dtype)
    return DataType(wire, f"TYPE_{wire}", dt, dt.itemsize)


_ALL = [
    _fixed("BOOL", np.bool_),
    _fixed("UINT8", np.uint8),
    _fixed("UINT16", np.uint16),
    _fixed("UINT32", np.uint32),
    _fixed("UINT64", np.uint64),
    _fixed("INT8", np.int8),
    _fixed("INT16", np.int16),
    _fixed("INT32", np.int32),
    _fixed("INT64", np.int64),
    _fixed("FP16", np.float16),
    _fixed("FP32", np.float32),
    _fixed("FP64", np.float64),
    _fixed("BF16", ml_dtypes.bfloat16),
    DataType("BYTES", "TYPE_STRING", np.dtype(object), 0),
]

BY_WIRE_NAME: dict[str, DataType] = {d.wire_name: d for d in _ALL}
BY_CONFIG_NAME: dict[str, DataType] = {d.config_name: d for d in _ALL}
WIRE_NAMES = ", ".join(BY_WIRE_NAME)


def from_wire_name(name: str, where: str = "datatype") -> DataType:
    """The datatype for a wire name, or an InvalidArgumentError naming the allowed ones."""
    found = BY_WIRE_NAME.get(name)
    if found is None:
        raise InvalidArgumentError(f"{where}: unknown datatype '{name}'; allowed: {WIRE_NAMES}")
    return found


def from_config_name(name: str) -> DataType:
    return BY_CONFIG_NAME[name]


def from_numpy_dtype(dtype: np.dtype) -> DataType:
    """The datatype of a numpy array's dtype; str/bytes/object arrays map to BYTES."""
    found = _BY_NUMPY_DTYPE.get(dtype)  # the common case, one lookup (called for every tensor)
    if found is not None:
        return found
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S", "U"):
        return BY_WIRE_NAME["BYTES"]
    for candidate in _ALL:
        if candidate.numpy_dtype == dtype:
            return candidate
    raise InvalidArgumentError(f"numpy dtype {dtype} has no Triton datatype")


# numpy dtypes to their datatype (the first of _ALL where two share one).
_BY_NUMPY_DTYPE: dict[np.dtype, DataType] = {}
for _candidate in _ALL:
    _BY_NUMPY_DTYPE.setdefault(_candidate.numpy_dtype, _candidate)
