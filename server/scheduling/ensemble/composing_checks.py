"""An ensemble checked against the configs of its composing models, at load.

Rules (Triton's, plus one limitation): a step's model is not decoupled (not supported in
ensembles yet); the ensemble's `max_batch_size` is at most every composing model's; a step
maps only tensors its model declares and feeds every required input; an ensemble tensor has
one datatype and consistent shapes wherever it is declared (ensemble input or output, the
step writing it, the steps reading it). Two shapes are consistent when their dims match
(-1 matches any size), or when they match with each batched side's batch dimension written
out as -1: a tensor may flow between a non-batched model's [1, 4] and a batched model's [4].
Shapes that only -1 leaves open are checked per request, when each step's model validates it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig

from modelgate.core.errors import ConfigError
from modelgate.server.scheduling.ensemble.graph import EnsembleGraph, EnsembleStep


@dataclass(frozen=True)
class _Declaration:
    """One place that declares an ensemble tensor."""

    field: str  # the config field errors name
    described: str  # e.g. "output 'OUTPUT0' of model 'add_sub' (step 0)"
    data_type: int
    dims: tuple[int, ...]  # without the batch dimension of a batched model
    full_dims: tuple[int, ...]  # with it, as -1


def check_composing_models(
    config: ModelConfig, graph: EnsembleGraph, source: str, composing: dict[int, ModelConfig]
) -> None:
    """Raise ConfigError for the first rule broken; `composing` maps step index -> its model's config."""
    for step in graph.steps:
        _check_step_model(config, step, composing[step.index], source)
    for tensor, declarations in _declarations(config, graph, composing).items():
        for other in declarations[1:]:
            _check_consistent(tensor, declarations[0], other, source)


def _check_step_model(config: ModelConfig, step: EnsembleStep, model: ModelConfig, source: str) -> None:
    if model.model_transaction_policy.decoupled:
        raise ConfigError(
            source,
            f"{step.field}.model_name",
            f"model '{step.model_name}' is decoupled; decoupled models cannot be ensemble steps yet",
        )
    if config.max_batch_size > model.max_batch_size:
        raise ConfigError(
            source,
            "max_batch_size",
            f"is {config.max_batch_size} but {step.label} allows at most {model.max_batch_size}; "
            "an ensemble's max_batch_size must not exceed any composing model's",
        )
    _check_names(step, "input_map", step.input_map, [t.name for t in model.input], "input", source)
    _check_names(step, "output_map", step.output_map, [t.name for t in model.output], "output", source)
    unfed = [t.name for t in model.input if not t.optional and t.name not in step.input_map]
    if unfed:
        raise ConfigError(
            source,
            f"{step.field}.input_map",
            f"feeds no ensemble tensor to required input(s) {', '.join(repr(n) for n in unfed)} of model "
            f"'{step.model_name}'",
        )


def _check_names(step: EnsembleStep, map_name: str, mapping: dict, declared: list[str], kind: str, source: str) -> None:
    for name in mapping:
        if name not in declared:
            raise ConfigError(
                source,
                f'{step.field}.{map_name}["{name}"]',
                f"model '{step.model_name}' has no {kind} '{name}'; its {kind}s are: {', '.join(declared) or 'none'}",
            )


def _declarations(config: ModelConfig, graph: EnsembleGraph, composing: dict[int, ModelConfig]):
    """{ensemble tensor: declarations}, the defining one (ensemble input or writing step) first."""
    found: dict[str, list[_Declaration]] = {}
    for index, tensor in enumerate(config.input):
        found.setdefault(tensor.name, []).append(_ensemble_declaration(config, tensor, f"input[{index}]", "input"))
    for step in graph.steps:
        model = composing[step.index]
        outputs = {t.name: t for t in model.output}
        for name, tensor in step.output_map.items():
            found.setdefault(tensor, []).append(_step_declaration(step, model, outputs[name], "output_map", "output"))
    for step in graph.steps:
        model = composing[step.index]
        inputs = {t.name: t for t in model.input}
        for name, tensor in step.input_map.items():
            found.setdefault(tensor, []).append(_step_declaration(step, model, inputs[name], "input_map", "input"))
    for index, tensor in enumerate(config.output):
        found[tensor.name].append(_ensemble_declaration(config, tensor, f"output[{index}]", "output"))
    return found


def _ensemble_declaration(config: ModelConfig, tensor, field: str, kind: str) -> _Declaration:
    described = f"ensemble {kind} '{tensor.name}'"
    return _Declaration(field, described, tensor.data_type, *_shapes(tensor, config.max_batch_size))


def _step_declaration(step: EnsembleStep, model: ModelConfig, tensor, map_name: str, kind: str) -> _Declaration:
    field = f'{step.field}.{map_name}["{tensor.name}"]'
    described = f"{kind} '{tensor.name}' of model '{step.model_name}' (step {step.index})"
    return _Declaration(field, described, tensor.data_type, *_shapes(tensor, model.max_batch_size))


def _shapes(tensor, max_batch_size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    dims = tuple(int(d) for d in tensor.dims)
    return dims, ((-1,) if max_batch_size > 0 else ()) + dims


def _check_consistent(tensor: str, first: _Declaration, other: _Declaration, source: str) -> None:
    if first.data_type != other.data_type:
        raise ConfigError(
            source,
            other.field,
            f"ensemble tensor '{tensor}' is {DataType.Name(first.data_type)} as {first.described} "
            f"but {DataType.Name(other.data_type)} as {other.described}",
        )
    if not (_dims_match(first.dims, other.dims) or _dims_match(first.full_dims, other.full_dims)):
        raise ConfigError(
            source,
            other.field,
            f"ensemble tensor '{tensor}' has dims {list(first.dims)} as {first.described} but {list(other.dims)} "
            f"as {other.described} (-1 matches any size; a batched model's dims exclude the batch dimension)",
        )


def _dims_match(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))
