"""An ensemble's steps as a graph of named tensors, built and checked from its config alone.

Triton's `ensemble_scheduling.step[i]` names a composing model and maps its tensors onto
ensemble tensors: `input_map` is {composing model input: ensemble tensor} and `output_map`
is {composing model output: ensemble tensor}. Invariants of a built `EnsembleGraph`:
- every ensemble tensor is an ensemble input or the output of exactly one step;
- every step input is fed (an ensemble input or another step's output);
- every ensemble output is produced by a step and every ensemble input is read by one;
- the steps form no cycle; `steps` is in a topological order.
What the composing models declare (names, datatypes, shapes) is checked at load, when their
configs are known: see `composing_checks`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError

ENSEMBLE_PLATFORM = "ensemble"
LATEST_VERSION = -1  # `model_version: -1` in a step: the composing model's latest serving version
_STEPS_FIELD = "ensemble_scheduling.step"


def is_ensemble(config: ModelConfig) -> bool:
    return config.platform == ENSEMBLE_PLATFORM


def composing_model_names(config: ModelConfig) -> list[str]:
    """The distinct models an ensemble config's steps name (no validation), in step order."""
    return list(dict.fromkeys(step.model_name for step in config.ensemble_scheduling.step))


@dataclass(frozen=True)
class EnsembleStep:
    index: int  # position in `ensemble_scheduling.step`
    model_name: str
    model_version: str  # "" for the latest version (-1 in the config), else the version number
    input_map: dict[str, str]  # composing model input -> ensemble tensor
    output_map: dict[str, str]  # composing model output -> ensemble tensor

    @property
    def label(self) -> str:
        """How errors name the step: `step 1 (model 'add_sub')`."""
        return f"step {self.index} (model '{self.model_name}')"

    @property
    def field(self) -> str:
        return f"{_STEPS_FIELD}[{self.index}]"


@dataclass(frozen=True)
class EnsembleGraph:
    name: str
    steps: tuple[EnsembleStep, ...]  # in a topological order
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    producers: dict[str, int]  # ensemble tensor -> index of the step that writes it
    consumers: dict[str, tuple[int, ...]]  # ensemble tensor -> indices of the steps that read it

    def step(self, index: int) -> EnsembleStep:
        return next(s for s in self.steps if s.index == index)


def build_ensemble_graph(config: ModelConfig, source: str) -> EnsembleGraph:
    """The graph of an ensemble config; ConfigError naming the field for the first problem."""
    if not config.ensemble_scheduling.step:
        raise ConfigError(source, _STEPS_FIELD, 'platform "ensemble" needs at least one step')
    steps = [_step(config, index, source) for index in range(len(config.ensemble_scheduling.step))]
    inputs = tuple(t.name for t in config.input)
    producers = _producers(steps, set(inputs), source)
    consumers = _consumers(steps, set(inputs), producers, source)
    _check_ensemble_outputs(config, producers, source)
    _check_inputs_read(config, consumers, source)
    ordered = _topological_order(steps, producers, source)
    outputs = tuple(t.name for t in config.output)
    return EnsembleGraph(config.name, tuple(ordered), inputs, outputs, producers, consumers)


def _step(config: ModelConfig, index: int, source: str) -> EnsembleStep:
    step = config.ensemble_scheduling.step[index]
    field = f"{_STEPS_FIELD}[{index}]"
    if not step.model_name:
        raise ConfigError(source, f"{field}.model_name", "is required")
    if step.model_name == config.name:
        raise ConfigError(source, f"{field}.model_name", f"'{step.model_name}' is the ensemble itself")
    if step.model_version < LATEST_VERSION:
        raise ConfigError(
            source, f"{field}.model_version", f"is {step.model_version}; use -1 (latest) or a version >= 0"
        )
    if not step.output_map:
        raise ConfigError(source, f"{field}.output_map", f"maps no output of model '{step.model_name}'")
    version = "" if step.model_version == LATEST_VERSION else str(step.model_version)
    return EnsembleStep(index, step.model_name, version, dict(step.input_map), dict(step.output_map))


def _producers(steps: list[EnsembleStep], inputs: set[str], source: str) -> dict[str, int]:
    producers: dict[str, int] = {}
    for step in steps:
        for model_output, tensor in step.output_map.items():
            where = f'{step.field}.output_map["{model_output}"]'
            if tensor in inputs:
                raise ConfigError(source, where, f"writes ensemble tensor '{tensor}', which is an ensemble input")
            if tensor in producers:
                other = steps[producers[tensor]].label
                raise ConfigError(source, where, f"writes ensemble tensor '{tensor}', already written by {other}")
            producers[tensor] = step.index
    return producers


def _consumers(
    steps: list[EnsembleStep], inputs: set[str], producers: dict[str, int], source: str
) -> dict[str, tuple[int, ...]]:
    consumers: dict[str, list[int]] = {}
    for step in steps:
        for model_input, tensor in step.input_map.items():
            if tensor not in inputs and tensor not in producers:
                known = sorted(inputs | set(producers))
                raise ConfigError(
                    source,
                    f'{step.field}.input_map["{model_input}"]',
                    f"reads ensemble tensor '{tensor}', which is neither an ensemble input nor any step's output; "
                    f"known tensors: {', '.join(known)}",
                )
            readers = consumers.setdefault(tensor, [])
            if step.index not in readers:
                readers.append(step.index)
    return {tensor: tuple(readers) for tensor, readers in consumers.items()}


def _check_ensemble_outputs(config: ModelConfig, producers: dict[str, int], source: str) -> None:
    for index, tensor in enumerate(config.output):
        if tensor.name not in producers:
            raise ConfigError(
                source,
                f"output[{index}].name",
                f"ensemble output '{tensor.name}' is not written by any step's output_map",
            )


def _check_inputs_read(config: ModelConfig, consumers: dict[str, tuple[int, ...]], source: str) -> None:
    for index, tensor in enumerate(config.input):
        if tensor.name not in consumers:
            raise ConfigError(source, f"input[{index}].name", f"ensemble input '{tensor.name}' is read by no step")


def _topological_order(steps: list[EnsembleStep], producers: dict[str, int], source: str) -> list[EnsembleStep]:
    """Kahn's algorithm; the steps left over lie on (or behind) a cycle."""
    needs = {s.index: {producers[t] for t in s.input_map.values() if t in producers} for s in steps}
    ordered: list[EnsembleStep] = []
    while len(ordered) < len(steps):
        ready = [s for s in steps if s not in ordered and not needs[s.index] - {o.index for o in ordered}]
        if not ready:
            stuck = [s.label for s in steps if s not in ordered]
            raise ConfigError(
                source,
                _STEPS_FIELD,
                f"the steps form a cycle: none of {', '.join(stuck)} can start before another of them has finished",
            )
        ordered.extend(ready)
    return ordered
