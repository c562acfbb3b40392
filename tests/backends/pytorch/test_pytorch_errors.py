"""Failures of a PyTorch model are its requests' errors (400); the server keeps serving."""

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException


def _still_serving(caller) -> None:
    a = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(caller.infer("add_sub", {"INPUT__0": a, "INPUT__1": a})["OUTPUT__0"], 2 * a)


def _refused(caller, model: str, inputs: dict) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        caller.infer(model, inputs)
    assert caught.value.status() == caller.bad_request_status(), caught.value
    return caught.value


def test_a_module_that_raises(caller):
    error = _refused(caller, "raiser", {"INPUT__0": np.array([[1, -1]], np.float32)})
    assert "model 'raiser' raised" in error.message() and "negative input" in error.message()
    ones = np.ones((1, 2), np.float32)
    np.testing.assert_array_equal(caller.infer("raiser", {"INPUT__0": ones})["OUTPUT__0"], ones + 1)
    _still_serving(caller)


def test_a_call_without_an_argument_the_module_needs(caller):
    a = np.ones(2, np.float32)
    # `b` is optional in the config, but forward(a, b) has no default for it.
    error = _refused(caller, "optional_b", {"a": a})
    assert "forward()" in error.message() and "'b'" in error.message()
    np.testing.assert_array_equal(caller.infer("optional_b", {"a": a, "b": a})["OUTPUT__0"], 2 * a)
    _still_serving(caller)


def test_a_lossy_output_type_is_refused(caller):
    error = _refused(caller, "lossy_output", {"INPUT__0": np.ones(2, np.float32)})
    assert "output 'OUTPUT__0' is torch.float64 but the config declares FP32" in error.message()
    _still_serving(caller)


def test_a_batch_the_exported_program_refuses(caller):
    # exported_indexed's config allows batches of 16, but its program was exported for at most 8.
    error = _refused(caller, "exported_indexed", {"INPUT__0": np.ones((12, 3), np.float32)})
    assert "model 'exported_indexed' raised" in error.message() and "<= 8" in error.message()
    x = np.ones((8, 3), np.float32)
    np.testing.assert_array_equal(caller.infer("exported_indexed", {"INPUT__0": x})["OUTPUT__0"], 2 * x)
