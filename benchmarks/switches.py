"""Engine switches set for one variant of a benchmark run, so that an A/B of a switch runs in one process.

A variant is `LABEL` or `LABEL:ASSIGNMENTS`, ASSIGNMENTS being comma-separated `dotted.path=value` with the
value a Python literal, e.g.

    --variant base pdl:modelgate.kernels.fp8_gemm_tma.PDL_PREFETCH_BYTES=1024
    --variant fused:modelgate.backends.llm.layers.fp8_linear.Fp8Linear.silu_in_gemm=True

The path is a module followed by attributes (a module constant, a class attribute). `switched(variant)` sets
them for the duration of a `with` block (build the engine inside: CUDA graphs keep what was set when they were
captured) and puts the previous values back.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
from typing import NamedTuple


class Variant(NamedTuple):
    label: str
    assignments: tuple[tuple[str, object], ...]


def parse_variant(text: str) -> Variant:
    """`LABEL[:path=value,...]`; ValueError naming what is wrong."""
    label, _, rest = text.partition(":")
    if not label:
        raise ValueError(f"variant {text!r}: needs a label before ':'")
    assignments = []
    for item in filter(None, rest.split(",")):
        path, equals, literal = item.partition("=")
        if not equals or "." not in path:
            raise ValueError(f"variant {text!r}: {item!r} is not module.attribute=value")
        try:
            value = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            raise ValueError(f"variant {text!r}: {literal!r} is not a Python literal") from None
        assignments.append((path, value))
    return Variant(label, tuple(assignments))


def _owner_and_name(path: str):
    """The object holding the attribute at `path` (the longest importable module prefix, then attributes)."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:-1]:
            owner = getattr(owner, name)
        if not hasattr(owner, parts[-1]):
            raise AttributeError(f"{path}: {type(owner).__name__} {owner!r} has no attribute {parts[-1]!r}")
        return owner, parts[-1]
    raise ImportError(f"{path}: no module in it can be imported")


@contextlib.contextmanager
def switched(variant: Variant):
    """Set the variant's attributes (each must exist already: a typo is an error, not a new attribute)."""
    previous = []
    try:
        for path, value in variant.assignments:
            owner, name = _owner_and_name(path)
            previous.append((owner, name, getattr(owner, name)))
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in reversed(previous):
            setattr(owner, name, value)
