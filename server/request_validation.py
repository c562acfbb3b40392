"""Checks an inference request against the model's configuration before it is scheduled."""

from __future__ import annotations

import math

from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.inference_types import InferRequest, InferTensor
from modelgate.core.tensors import datatypes


def validate_request(request: InferRequest, config: ModelConfig) -> int:
    """Raise InvalidArgumentError for any mismatch; return the request's batch size (1 if unbatched).

    Inputs declared with `reshape` are reshaped in place to the model's shape.
    """
    declared = {tensor.name: tensor for tensor in config.input}
    _check_input_names(request, config, declared)
    batch_sizes = {name: _check_input(request.inputs[name], declared[name], config) for name in request.inputs}
    _check_outputs(request, config)
    distinct = set(batch_sizes.values())
    if len(distinct) > 1:
        raise InvalidArgumentError(
            f"inputs of a request to model '{config.name}' must share the batch size (first dimension); "
            f"got {batch_sizes}"
        )
    return distinct.pop() if distinct else 1


def _check_input_names(request: InferRequest, config: ModelConfig, declared: dict) -> None:
    for name in request.inputs:
        if name not in declared:
            raise InvalidArgumentError(
                f"unexpected inference input '{name}' for model '{config.name}'; "
                f"its inputs are: {', '.join(declared) or 'none'}"
            )
    missing = [n for n, t in declared.items() if not t.optional and n not in request.inputs]
    if missing:
        raise InvalidArgumentError(
            f"model '{config.name}' expects input(s) {', '.join(repr(m) for m in missing)} that the request does not have"
        )


def _check_input(tensor: InferTensor, declared, config: ModelConfig) -> int:
    expected_type = datatypes.from_config_name(DataType.Name(declared.data_type)).wire_name
    if tensor.datatype != expected_type:
        raise InvalidArgumentError(
            f"input '{tensor.name}' of model '{config.name}' has datatype {tensor.datatype}, expected {expected_type}"
        )
    dims = list(declared.dims)
    shape = list(tensor.shape)
    batch_size = 1
    if config.max_batch_size > 0:
        batch_size = _check_batch_dimension(tensor, config)
        shape = shape[1:]
    if not _shape_matches(shape, dims):
        expected = ([-1] if config.max_batch_size > 0 else []) + dims
        raise InvalidArgumentError(
            f"input '{tensor.name}' of model '{config.name}' has shape {list(tensor.shape)}, expected {expected} "
            "(-1 is any size)"
        )
    if declared.HasField("reshape"):
        _apply_reshape(tensor, list(declared.reshape.shape), config.max_batch_size > 0)
    return batch_size


def _check_batch_dimension(tensor: InferTensor, config: ModelConfig) -> int:
    if not tensor.shape:
        raise InvalidArgumentError(
            f"input '{tensor.name}' of model '{config.name}' needs a batch dimension first "
            f"(max_batch_size is {config.max_batch_size})"
        )
    batch_size = tensor.shape[0]
    if batch_size < 1 or batch_size > config.max_batch_size:
        raise InvalidArgumentError(
            f"batch size {batch_size} of input '{tensor.name}' is out of range for model '{config.name}': "
            f"it must be between 1 and max_batch_size {config.max_batch_size}"
        )
    return batch_size


def _shape_matches(shape: list[int], dims: list[int]) -> bool:
    return len(shape) == len(dims) and all(d == -1 or d == s for s, d in zip(shape, dims))


def _apply_reshape(tensor: InferTensor, target: list[int], has_batch: bool) -> None:
    prefix = [tensor.shape[0]] if has_batch else []
    if -1 in target:
        return
    new_shape = tuple(prefix + target)
    if math.prod(new_shape) == math.prod(tensor.data.shape):  # numpy or (a BLS GPU input) torch
        tensor.data = tensor.data.reshape(new_shape)
        tensor.shape = new_shape


def _check_outputs(request: InferRequest, config: ModelConfig) -> None:
    declared = [tensor.name for tensor in config.output]
    seen = set()
    for output in request.outputs:
        if output.name not in declared:
            raise InvalidArgumentError(
                f"unexpected inference output '{output.name}' for model '{config.name}'; "
                f"its outputs are: {', '.join(declared) or 'none'}"
            )
        if output.name in seen:
            raise InvalidArgumentError(f"output '{output.name}' is requested more than once")
        seen.add(output.name)
