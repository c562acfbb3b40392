"""Tensors that live on a GPU: torch CUDA tensors that python models hand to each other (BLS), and inputs read
from a client's CUDA shared-memory region.

InferTensor.data is a numpy array everywhere, with two exceptions: a request a python model sends to another
python model (BLS) may carry torch CUDA tensors, and its response may too (`InferRequest.can_take_device_outputs`);
an input in a CUDA shared-memory region is a torch CUDA tensor until a model that wants host memory gets it.
Whatever needs host memory (other backends, the frontends' encoders) calls `as_host_array`. torch is imported
only when a tensor is not a numpy array: core never needs it otherwise.
"""

from __future__ import annotations

import numpy as np

from modelgate.core.backend_names import PLATFORM_BACKENDS
from modelgate.core.inference_types import InferRequest
from modelgate.core.tensors import datatypes


def is_device_tensor(data) -> bool:
    """A tensor in GPU memory (duck-typed: torch's `is_cuda`), not a numpy array."""
    return not isinstance(data, np.ndarray) and bool(getattr(data, "is_cuda", False))


def as_host_array(data) -> np.ndarray:
    """`data` as a numpy array in host memory: numpy arrays as they are, torch tensors copied off their device."""
    if isinstance(data, np.ndarray):
        return data
    import torch

    tensor = data.detach().cpu()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: the bits, viewed as ml_dtypes' type
        return tensor.contiguous().view(torch.uint16).numpy().view(datatypes.BY_WIRE_NAME["BF16"].numpy_dtype)
    return tensor.numpy()


def inputs_to_host(request: InferRequest) -> None:
    """Move the request's device inputs to host memory, in place (for a model that takes host arrays only)."""
    for tensor in request.inputs.values():
        if is_device_tensor(tensor.data):
            tensor.data = as_host_array(tensor.data)


def takes_device_inputs(config) -> bool:  # config: ModelConfig
    """Whether the model gets GPU inputs as they are: PyTorch models (their instances move every input to their
    own device: a CUDA shared-memory input then never passes through host memory), and python models that set
    Triton's parameter FORCE_CPU_ONLY_INPUT_TENSORS to "no". Every other model, and python models by default (as
    in Triton, so that `as_numpy()` works on every input), gets them in host memory."""
    if config.backend == "pytorch" or PLATFORM_BACKENDS.get(config.platform) == "pytorch":
        return True
    if config.backend != "python":
        return False
    parameter = config.parameters.get("FORCE_CPU_ONLY_INPUT_TENSORS")
    return parameter is not None and parameter.string_value.strip().lower() in ("no", "false", "off", "0")
