import ml_dtypes
import numpy as np
import pytest

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.tensors import datatypes


def test_every_wire_name_has_config_name_and_dtype():
    assert set(datatypes.BY_WIRE_NAME) == {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BF16",
        "BYTES",
    }
    assert datatypes.from_config_name("TYPE_STRING").wire_name == "BYTES"
    assert datatypes.from_wire_name("BF16").numpy_dtype == np.dtype(ml_dtypes.bfloat16)
    assert datatypes.from_wire_name("FP16").itemsize == 2


def test_numpy_dtype_lookup():
    assert datatypes.from_numpy_dtype(np.float32).wire_name == "FP32"
    assert datatypes.from_numpy_dtype(np.dtype("U3")).wire_name == "BYTES"
    assert datatypes.from_numpy_dtype(np.dtype(ml_dtypes.bfloat16)).wire_name == "BF16"


def test_unknown_wire_name_lists_allowed():
    with pytest.raises(InvalidArgumentError, match="allowed: BOOL"):
        datatypes.from_wire_name("FLOAT")
