"""Per-request sampling settings, and the one place where user input becomes them.

`parse_sampling_params` runs in the server process, where a request's JSON and tensors are read; the engine
process receives the result as a typed message (engine_messages.py) and never checks it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from modelgate.core.errors import InvalidArgumentError

MAX_TOP_LOGPROBS = 20
# Bounds on the lists a client sends. vLLM bounds none of them; OpenAI allows 4 stop strings. Each stop string
# is looked for in every new piece of text of its request, so their count and length are work per token.
MAX_STOP_STRINGS = 64
MAX_STOP_STRING_CHARS = 512
MAX_STOP_TOKEN_IDS = 1024


class SamplingParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What to sample and when to stop. Field names follow vLLM's SamplingParams; temperature 0 means greedy.

    Invariant: the values are within SAMPLING_LIMITS. Built from user input only by `parse_sampling_params`;
    the constructor checks nothing (the engine's own tests and benchmarks build these directly).
    """

    max_tokens: int = 16
    min_tokens: int = 0
    temperature: float = 1.0
    top_k: int = 0  # 0 or -1: disabled
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = []
    stop_token_ids: list[int] = []
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


SAMPLING_FIELDS = frozenset(SamplingParams.__struct_fields__)


@dataclass(frozen=True)
class Limits:
    """Inclusive (ge, le) and exclusive (gt, lt) bounds of a number."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def allows(self, value: float) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def __str__(self) -> str:
        bounds = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        return " and ".join(f"{sign} {getattr(self, name)}" for name, sign in bounds if getattr(self, name) is not None)


SAMPLING_LIMITS = {
    "max_tokens": Limits(ge=1),
    "min_tokens": Limits(ge=0),
    "temperature": Limits(ge=0.0, le=100.0),
    "top_k": Limits(ge=-1),
    "top_p": Limits(gt=0.0, le=1.0),
    "min_p": Limits(ge=0.0, le=1.0),
    "seed": Limits(ge=0, lt=2**63),
    "repetition_penalty": Limits(gt=0.0, le=10.0),
    "presence_penalty": Limits(ge=-2.0, le=2.0),
    "frequency_penalty": Limits(ge=-2.0, le=2.0),
    "logprobs": Limits(ge=0, le=MAX_TOP_LOGPROBS),
}


def parse_sampling_params(fields: Mapping[str, Any]) -> SamplingParams:
    """SamplingParams from user values (JSON values; numbers and booleans may come as strings).

    InvalidArgumentError names every field that is wrong and what it allows. Unknown fields are errors: a
    misspelt option must not be silently ignored.
    """
    fields = dict(fields)
    if isinstance(fields.get("stop"), str):
        fields["stop"] = [fields["stop"]]
    try:
        params = msgspec.convert(fields, SamplingParams, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidArgumentError(f"invalid sampling parameters: {_type_problem(str(exc))}") from None
    problems = _range_problems(params) + _list_problems(params)
    if params.min_tokens > params.max_tokens:  # as vLLM: the request could never meet both
        problems.append(f"min_tokens: must be <= max_tokens ({params.max_tokens}), got {params.min_tokens}")
    if problems:
        raise InvalidArgumentError(f"invalid sampling parameters: {'; '.join(problems)}")
    return params


def _type_problem(message: str) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.top_k`" as "top_k: expected `int`, got `str`"."""
    text, _, where = message.partition(" - at `$.")
    if not where:
        return message
    return f"{where.rstrip('`')}: {text[:1].lower()}{text[1:]}"


def _range_problems(params: SamplingParams) -> list[str]:
    problems = []
    for name, limits in SAMPLING_LIMITS.items():
        value = getattr(params, name)
        if value is not None and not limits.allows(value):
            problems.append(f"{name}: must be {limits}, got {value}")
    return problems


def _list_problems(params: SamplingParams) -> list[str]:
    problems = []
    if len(params.stop) > MAX_STOP_STRINGS:
        problems.append(f"stop: at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(params.stop)}")
    elif any(s == "" for s in params.stop):
        problems.append("stop: stop strings must not be empty")
    longest = max(map(len, params.stop), default=0)
    if longest > MAX_STOP_STRING_CHARS:
        problems.append(f"stop: each stop string must be 1 to {MAX_STOP_STRING_CHARS} characters, got {longest}")
    if len(params.stop_token_ids) > MAX_STOP_TOKEN_IDS:
        problems.append(
            f"stop_token_ids: at most {MAX_STOP_TOKEN_IDS} token ids are allowed, got {len(params.stop_token_ids)}"
        )
    elif any(t < 0 for t in params.stop_token_ids):
        problems.append("stop_token_ids: must be non-negative token ids")
    return problems
