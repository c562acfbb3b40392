"""One ONNX Runtime run: numpy arrays in, numpy arrays out, BF16 included.

The plain path is `session.run`, which copies outputs to host numpy arrays (also from a
CUDA session). ONNX Runtime's Python API has no numpy bfloat16, so BF16 inputs go in as
OrtValues over their uint16 bit patterns, and when a BF16 output is wanted the run goes
through an IOBinding whose outputs live on the CPU, read back through their data pointer.
ONNX Runtime cannot bind string tensors, so a run that returns BF16 cannot take strings.
"""

from __future__ import annotations

import ctypes

import ml_dtypes
import numpy as np
import onnxruntime

from modelgate.backends.onnx.onnx_types import BF16_ONNX_ELEMENT_TYPE
from modelgate.core.errors import ModelExecutionError


def run_session(
    session: onnxruntime.InferenceSession, feeds: dict[str, np.ndarray], output_names: list[str], bf16_outputs: set[str]
) -> dict[str, np.ndarray]:
    """Run once; returns `output_names` -> host arrays (BF16 as ml_dtypes.bfloat16)."""
    ort_feeds = {name: _as_feed(array) for name, array in feeds.items()}
    if not bf16_outputs.intersection(output_names):
        return dict(zip(output_names, session.run(output_names, ort_feeds)))
    return _run_bound(session, ort_feeds, output_names)


def _as_feed(array: np.ndarray):
    if array.dtype == ml_dtypes.bfloat16:
        bits = np.ascontiguousarray(array).view(np.uint16)
        return onnxruntime.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, BF16_ONNX_ELEMENT_TYPE)
    return array


def _run_bound(session, ort_feeds: dict, output_names: list[str]) -> dict[str, np.ndarray]:
    strings = [name for name, value in ort_feeds.items() if isinstance(value, np.ndarray) and value.dtype == object]
    if strings:
        raise ModelExecutionError(
            f"ONNX Runtime's Python API cannot return BF16 outputs from a run with string inputs ({', '.join(strings)})"
        )
    binding = session.io_binding()
    for name, value in ort_feeds.items():
        if isinstance(value, np.ndarray):
            value = onnxruntime.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
        binding.bind_ortvalue_input(name, value)
    for name in output_names:
        binding.bind_output(name, "cpu")
    session.run_with_iobinding(binding)
    return {name: _host_array(value) for name, value in zip(output_names, binding.get_outputs())}


def _host_array(value: onnxruntime.OrtValue) -> np.ndarray:
    if value.element_type() != BF16_ONNX_ELEMENT_TYPE:
        return value.numpy()
    shape = tuple(value.shape())
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.zeros(shape, dtype=ml_dtypes.bfloat16)
    # The OrtValue owns the memory: copy the bits out before it is released.
    bits = np.ctypeslib.as_array((ctypes.c_uint16 * count).from_address(value.data_ptr())).copy()
    return bits.view(ml_dtypes.bfloat16).reshape(shape)
