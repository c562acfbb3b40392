"""Checks an inference request against the model's configuration before it is scheduled."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.inference_types import InferRequest, InferTensor
from modelgate.core.tensors import datatypes
from modelgate.server.scheduling.sequence.config_fields import is_sequence_model
from modelgate.server.scheduling.sequence.correlation import has_sequence_parameters


@dataclass(frozen=True)
class _DeclaredInput:
    wire_type: str
    dims: list[int]
    optional: bool
    reshape: list[int] | None


class RequestSchema:
    """What a model's configuration says of its requests, read once per loaded version: checking a request is
    then dictionary lookups, not walks over the configuration message."""

    def __init__(self, config: ModelConfig):
        self.config = config
        self.model_name = config.name
        self.max_batch_size = config.max_batch_size
        self.inputs = {
            t.name: _DeclaredInput(
                datatypes.from_config_name(DataType.Name(t.data_type)).wire_name,
                list(t.dims),
                t.optional,
                list(t.reshape.shape) if t.HasField("reshape") else None,
            )
            for t in config.input
        }
        self.required = [name for name, declared in self.inputs.items() if not declared.optional]
        self.outputs = [t.name for t in config.output]
        self.is_sequence_model = is_sequence_model(config)

    def validate(self, request: InferRequest) -> int:
        """Raise InvalidArgumentError for any mismatch; return the request's batch size (1 if unbatched).

        Inputs declared with `reshape` are reshaped in place to the model's shape.
        """
        if not self.is_sequence_model and has_sequence_parameters(request.parameters):
            raise InvalidArgumentError(
                f"model '{self.model_name}' is not a sequence model (its config has no sequence_batching): "
                "request parameters 'sequence_id', 'sequence_start' and 'sequence_end' are not allowed"
            )
        self._check_input_names(request)
        batch_sizes = {name: self._check_input(request.inputs[name], self.inputs[name]) for name in request.inputs}
        if request.outputs:
            _check_outputs(request, self.config, self.outputs)
        distinct = set(batch_sizes.values())
        if len(distinct) > 1:
            raise InvalidArgumentError(
                f"inputs of a request to model '{self.model_name}' must share the batch size (first dimension); "
                f"got {batch_sizes}"
            )
        return distinct.pop() if distinct else 1

    def _check_input_names(self, request: InferRequest) -> None:
        declared = self.inputs
        for name in request.inputs:
            if name not in declared:
                raise InvalidArgumentError(
                    f"unexpected inference input '{name}' for model '{self.model_name}'; "
                    f"its inputs are: {', '.join(declared) or 'none'}"
                )
        missing = [n for n in self.required if n not in request.inputs]
        if missing:
            raise InvalidArgumentError(
                f"model '{self.model_name}' expects input(s) {', '.join(repr(m) for m in missing)} "
                "that the request does not have"
            )

    def _check_input(self, tensor: InferTensor, declared: _DeclaredInput) -> int:
        if tensor.datatype != declared.wire_type:
            raise InvalidArgumentError(
                f"input '{tensor.name}' of model '{self.model_name}' has datatype {tensor.datatype}, "
                f"expected {declared.wire_type}"
            )
        shape = list(tensor.shape)
        batch_size = 1
        if self.max_batch_size > 0:
            batch_size = _check_batch_dimension(tensor, self.config)
            shape = shape[1:]
        if not _shape_matches(shape, declared.dims):
            expected = ([-1] if self.max_batch_size > 0 else []) + declared.dims
            raise InvalidArgumentError(
                f"input '{tensor.name}' of model '{self.model_name}' has shape {list(tensor.shape)}, "
                f"expected {expected} (-1 is any size)"
            )
        if declared.reshape is not None:
            _apply_reshape(tensor, declared.reshape, self.max_batch_size > 0)
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


def _check_outputs(request: InferRequest, config: ModelConfig, declared: list[str]) -> None:
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
