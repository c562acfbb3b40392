"""Request patterns: an endless stream of (pattern name, input length, output length) plans.

Lengths are tokens. The four classes follow the usual serving benchmarks (TensorRT-LLM, vLLM,
genai-perf): short or long input crossed with short or long output.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelgate.clients.bench.llm_settings import LengthSettings

CLASS_NAMES = ("long-in-short-out", "long-in-long-out", "short-in-long-out", "short-in-short-out")


@dataclass(frozen=True)
class RequestPlan:
    index: int
    pattern: str
    isl: int
    osl: int


class PatternError(ValueError):
    """A pattern that cannot be built (bad weights, an unreadable or empty trace)."""


def request_plans(lengths: LengthSettings, seed: int = 0, shortest_isl: int = 1) -> Iterator[RequestPlan]:
    """Endless plans; `index` counts from 0. Deterministic for a given seed. `shortest_isl`: the fewest tokens
    a prompt can have (PromptBuilder.shortest: BOS and one token of its own), kept when shortening to fit (a
    drawn ISL below it is left to the prompt source, which raises it or refuses it)."""
    rng = np.random.default_rng(seed)
    draws = _draws(lengths, rng)
    for index, (name, isl, osl) in enumerate(draws):
        isl, osl = _fit(max(1, int(isl)), max(1, int(osl)), lengths.max_model_len, shortest_isl)
        yield RequestPlan(index, name, isl, osl)


def class_lengths(lengths: LengthSettings, name: str) -> tuple[int, int]:
    isl = lengths.long_isl if name.startswith("long-in") else lengths.short_isl
    osl = lengths.long_osl if name.endswith("long-out") else lengths.short_osl
    return isl, osl


def read_trace_lengths(path: Path) -> list[tuple[int, int]]:
    """(isl, osl) of every line of a JSONL trace; blank lines are skipped."""
    pairs = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise PatternError(f"cannot read trace file {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((int(row["isl"]), int(row["osl"])))
        except (ValueError, KeyError, TypeError):
            raise PatternError(f"{path}:{number}: expected a JSON object with integer 'isl' and 'osl'") from None
    if not pairs:
        raise PatternError(f"trace file {path} has no requests")
    return pairs


def _draws(lengths: LengthSettings, rng: np.random.Generator) -> Iterator[tuple[str, float, float]]:
    kind = lengths.pattern
    if kind == "fixed":
        return itertools.repeat(("fixed", lengths.isl, lengths.osl))
    if kind in CLASS_NAMES:
        return itertools.repeat((kind, *class_lengths(lengths, kind)))
    if kind == "mix":
        return _mix(lengths, rng)
    if kind == "normal":
        return _normal(lengths, rng)
    if kind == "uniform":
        return _uniform(lengths, rng)
    return (("trace", isl, osl) for isl, osl in itertools.cycle(read_trace_lengths(lengths.trace_file)))


def _mix(lengths: LengthSettings, rng: np.random.Generator):
    unknown = set(lengths.mix_weights) - set(CLASS_NAMES)
    if unknown:
        raise PatternError(f"mix weights name unknown classes {sorted(unknown)}; the classes are {list(CLASS_NAMES)}")
    weights = np.array([lengths.mix_weights.get(name, 0.0 if lengths.mix_weights else 1.0) for name in CLASS_NAMES])
    if weights.min() < 0 or weights.sum() <= 0:
        raise PatternError("mix weights must be non-negative with a positive sum")
    while True:
        name = CLASS_NAMES[rng.choice(len(CLASS_NAMES), p=weights / weights.sum())]
        yield (name, *class_lengths(lengths, name))


def _normal(lengths: LengthSettings, rng: np.random.Generator):
    while True:
        yield (
            "normal",
            round(rng.normal(lengths.isl, lengths.isl_stddev)),
            round(rng.normal(lengths.osl, lengths.osl_stddev)),
        )


def _uniform(lengths: LengthSettings, rng: np.random.Generator):
    isl_range = (lengths.isl_min or 1, lengths.isl_max or lengths.isl)
    osl_range = (lengths.osl_min or 1, lengths.osl_max or lengths.osl)
    for low, high in (isl_range, osl_range):
        if low > high:
            raise PatternError(f"uniform range [{low}, {high}] is empty")
    while True:
        yield ("uniform", rng.integers(isl_range[0], isl_range[1] + 1), rng.integers(osl_range[0], osl_range[1] + 1))


def _fit(isl: int, osl: int, max_model_len: int | None, shortest_isl: int = 1) -> tuple[int, int]:
    """Shorten to fit a context: the input keeps at least `shortest_isl` tokens (or its own length, if less) and
    the output one; the output gets what that leaves, then the input what is left."""
    if max_model_len is None or isl + osl <= max_model_len:
        return isl, osl
    floor = min(isl, shortest_isl)
    osl = max(1, min(osl, max_model_len - floor))
    return max(floor, min(isl, max_model_len - osl)), osl
