"""JSON tensor data to arrays: the all-floats fast path gives what the checked path gives, and what it must
refuse still goes the checked way."""

import math

import ml_dtypes
import numpy as np
import pytest

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.tensors import datatypes
from modelgate.server.frontends.http.json_tensors import array_to_json, json_to_array


@pytest.mark.parametrize("wire_name", ["FP16", "FP32", "FP64"])
def test_json_floats_become_the_declared_float_type(wire_name):
    datatype = datatypes.from_wire_name(wire_name)
    data = [0.1, -2.5, 1e300, float("nan"), 3.0, 7.25]
    with np.errstate(over="ignore"):
        array = json_to_array(data, datatype, (2, 3), "input 'X'")
        expected = np.array(data, dtype=np.float64).astype(datatype.numpy_dtype).reshape(2, 3)
    assert array.dtype == datatype.numpy_dtype and array.shape == (2, 3)
    np.testing.assert_array_equal(array, expected)  # NaN equal to NaN, 1e300 to inf below FP64


@pytest.mark.parametrize("data", [[1.0, True], [1.0, "2.0"], [1.0, [2.0]]])
def test_float_data_with_a_bool_string_or_list_in_it_is_refused(data):
    with pytest.raises(InvalidArgumentError, match="input 'X'"):
        json_to_array(data, datatypes.from_wire_name("FP32"), (2,), "input 'X'")


def test_integers_in_float_data_still_convert():
    array = json_to_array([1, 2.5], datatypes.from_wire_name("FP32"), (2,), "input 'X'")
    assert array.dtype == np.float32 and array.tolist() == [1.0, 2.5]


def test_bfloat16_outputs_become_json_floats():
    values = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)
    assert array_to_json(values) == [1.5, -2.0]
    assert all(isinstance(v, float) and not math.isnan(v) for v in array_to_json(values))
