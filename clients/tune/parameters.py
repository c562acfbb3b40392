"""The LLM engine settings `modelgate tune` may vary: names, kinds, bounds and defaults.

The names are config.pbtxt `parameters` keys of the LLM backend (its EngineConfig fields). This floor may not
import the backend, so the table is written here and a test checks it against EngineConfig: every name a field,
every default, bound and choice the engine's own. Values travel as config.pbtxt writes them (strings), in one
canonical spelling each (`canonical_value`), so equal settings compare equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from modelgate.clients.tune.tune_errors import TuneInputError

Kind = Literal["int", "float", "bool", "choice"]
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class TunableParameter:
    """One engine setting. `default`: the engine's own when the config leaves it out (None: derived at load).
    `refinable`: an integer whose neighbours the refinement step tries (it scales throughput and latency)."""

    name: str
    kind: Kind
    default: str | None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] = ()
    refinable: bool = False


TUNABLE_PARAMETERS: dict[str, TunableParameter] = {
    p.name: p
    for p in (
        TunableParameter("max_num_seqs", "int", "64", minimum=1, refinable=True),
        TunableParameter("max_num_batched_tokens", "int", None, minimum=1, refinable=True),
        TunableParameter("max_model_len", "int", None, minimum=2),
        TunableParameter("block_size", "int", "16", minimum=1, maximum=256),
        TunableParameter("num_kv_blocks", "int", None, minimum=1, refinable=True),
        TunableParameter("gpu_memory_utilization", "float", "0.9", minimum=0.0, maximum=1.0, exclusive_minimum=True),
        TunableParameter("dtype", "choice", "auto", choices=("auto", "float32", "float16", "bfloat16")),
        TunableParameter("quantization", "choice", "none", choices=("none", "fp8")),
        TunableParameter("kv_cache_dtype", "choice", "auto", choices=("auto", "fp8")),
        TunableParameter("attention_backend", "choice", "auto", choices=("auto", "torch", "triton")),
        TunableParameter("cuda_graph_max_batch_size", "int", None, minimum=0, refinable=True),
        TunableParameter("cuda_graph_max_num_tokens", "int", None, minimum=0, refinable=True),
        TunableParameter("enforce_eager", "bool", "false"),
        TunableParameter("enable_prefix_caching", "bool", "true"),
        TunableParameter("enable_chunked_prefill", "bool", "true"),
        TunableParameter("overlap_output_processing", "bool", "true"),
        TunableParameter("launch_decode_ahead", "bool", "true"),
        TunableParameter("admit_waiting_ahead", "bool", "true"),
    )
}


def tunable(name: str) -> TunableParameter:
    """The parameter called `name`; TuneInputError naming the tunable ones otherwise."""
    parameter = TUNABLE_PARAMETERS.get(name)
    if parameter is None:
        raise TuneInputError(
            f"'{name}' is not an engine setting tune can vary; those are: {', '.join(TUNABLE_PARAMETERS)}"
        )
    return parameter


def canonical_value(name: str, text: str) -> str:
    """`text` checked against the parameter's kind and bounds, in its one spelling ('16', '0.9', 'true')."""
    parameter = tunable(name)
    value = str(text).strip()
    if parameter.kind == "bool":
        return _boolean(parameter, value)
    if parameter.kind == "choice":
        if value not in parameter.choices:
            raise TuneInputError(f"{name}={value}: expected one of {', '.join(parameter.choices)}")
        return value
    number = _number(parameter, value)
    _check_bounds(parameter, number)
    return str(int(number)) if parameter.kind == "int" else repr(number)


def _boolean(parameter: TunableParameter, value: str) -> str:
    if value.lower() in _TRUE:
        return "true"
    if value.lower() in _FALSE:
        return "false"
    raise TuneInputError(f"{parameter.name}={value}: expected true or false")


def _number(parameter: TunableParameter, value: str) -> float:
    try:
        number = int(value) if parameter.kind == "int" else float(value)
    except ValueError:
        raise TuneInputError(
            f"{parameter.name}={value}: expected {'an integer' if parameter.kind == 'int' else 'a number'}"
        ) from None
    if not math.isfinite(number):
        raise TuneInputError(f"{parameter.name}={value}: expected a finite number")
    return number


def _check_bounds(parameter: TunableParameter, number: float) -> None:
    low, high = parameter.minimum, parameter.maximum
    too_low = low is not None and (number <= low if parameter.exclusive_minimum else number < low)
    if too_low or (high is not None and number > high):
        low_text = "-inf" if low is None else f"{low:g}"
        bracket = "(" if parameter.exclusive_minimum else "["
        high_text = "inf)" if high is None else f"{high:g}]"
        raise TuneInputError(f"{parameter.name}={number:g}: allowed range is {bracket}{low_text}, {high_text}")
