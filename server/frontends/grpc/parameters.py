"""`InferParameter` maps <-> plain Python values."""

from __future__ import annotations

from typing import Any

from modelgate.core.errors import InvalidArgumentError


def parameters_to_dict(parameters) -> dict[str, Any]:
    """A protobuf map of InferParameter (or ModelRepositoryParameter) as a dict of values."""
    values = {}
    if not parameters:  # the common case, and `items()` of a protobuf map is not free
        return values
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, choice) if choice else None
    return values


def fill_parameters(target, values: dict[str, Any]) -> None:
    """Write `values` into a protobuf map of InferParameter."""
    for key, value in values.items():
        parameter = target[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            parameter.int64_param = value
        elif isinstance(value, float):
            parameter.double_param = value
        elif isinstance(value, str):
            parameter.string_param = value
        else:
            raise InvalidArgumentError(f"parameter '{key}' of type {type(value).__name__} has no gRPC form")
