"""From the tensors forward() returned to each request's output arrays.

An output is cast to its configured dtype only when the cast is lossless (e.g. FP16 -> FP32,
INT32 -> INT64); a lossy one (FP32 -> FP16, INT64 -> INT32) is an error that names both types,
because silently rounding a model's result is worse than asking the config to say what it
returns. Shapes are checked against the config's dims (after `reshape`, when declared).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig

from modelgate.backends.pytorch.request_batch import RequestBatch
from modelgate.backends.pytorch.tensor_dtypes import is_lossless, to_numpy, torch_dtype
from modelgate.core.errors import ModelExecutionError
from modelgate.core.tensors import datatypes


@dataclass(frozen=True)
class OutputSpec:
    name: str
    wire_name: str  # "FP32"
    dtype: torch.dtype
    dims: tuple[int, ...]  # without the batch dimension; -1 is any size
    has_reshape: bool  # the model returns `reshape.shape`; clients see `dims`


def output_specs(config: ModelConfig) -> dict[str, OutputSpec]:
    specs = {}
    for tensor in config.output:
        type_name = DataType.Name(tensor.data_type)
        wire_name = datatypes.from_config_name(type_name).wire_name
        specs[tensor.name] = OutputSpec(
            tensor.name, wire_name, torch_dtype(type_name), tuple(tensor.dims), tensor.HasField("reshape")
        )
    return specs


def host_array(tensor: torch.Tensor, spec: OutputSpec, batch: RequestBatch) -> np.ndarray:
    """The whole batch's output on the host, in the configured dtype; ModelExecutionError if it cannot be."""
    if batch.is_batched and (tensor.dim() == 0 or tensor.shape[0] != batch.num_rows):
        raise ModelExecutionError(
            f"output '{spec.name}' has shape {list(tensor.shape)}; its first dimension must be the batch "
            f"dimension ({batch.num_rows} rows in this batch)"
        )
    if tensor.dtype != spec.dtype:
        if not is_lossless(tensor.dtype, spec.dtype):
            raise ModelExecutionError(
                f"output '{spec.name}' is {tensor.dtype} but the config declares {spec.wire_name}, and converting "
                "would lose values; declare the type the model returns (or cast inside the model)"
            )
        tensor = tensor.to(spec.dtype)
    return to_numpy(tensor.detach().to("cpu").contiguous())


def request_arrays(array: np.ndarray, spec: OutputSpec, batch: RequestBatch) -> list[np.ndarray]:
    """Each request's part of `array`, shaped as the config declares."""
    parts = batch.split(array) if batch.is_batched else [array]
    return [_shaped(part, spec, batch.is_batched) for part in parts]


def _shaped(part: np.ndarray, spec: OutputSpec, is_batched: bool) -> np.ndarray:
    prefix = list(part.shape[:1]) if is_batched else []
    if spec.has_reshape:
        part = _reshape(part, prefix, spec)
    shape = list(part.shape[len(prefix) :])
    if len(shape) != len(spec.dims) or any(d != -1 and d != s for s, d in zip(shape, spec.dims)):
        raise ModelExecutionError(
            f"output '{spec.name}' has shape {list(part.shape)} for a request, but the config declares dims "
            f"{list(spec.dims)}" + (" after the batch dimension" if is_batched else "")
        )
    return part


def _reshape(part: np.ndarray, prefix: list[int], spec: OutputSpec) -> np.ndarray:
    try:
        return part.reshape(prefix + list(spec.dims))
    except ValueError:
        raise ModelExecutionError(
            f"output '{spec.name}' of shape {list(part.shape)} cannot be reshaped to its dims {list(spec.dims)}"
        ) from None
