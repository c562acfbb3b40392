"""The refinement step: new candidates around the best one so far, one setting changed at a time.

For each refinable integer setting the space varies (max_num_seqs, max_num_batched_tokens, num_kv_blocks,
cuda_graph_max_batch_size), with the best candidate's value v and the values tried so far:
- between v and its nearest tried neighbour on each side, the geometric midpoint (these settings scale
  multiplicatively, and grids over them are usually powers of two), when it is a new integer;
- past the edge, where v is the largest tried value: 2v (capped at the setting's maximum); where it is the
  smallest: v // 2 (not below the minimum).
Each proposal is the best candidate's overrides with that one value changed. Repeating the step narrows the
interval around the best value like a bisection, or walks outwards while the best sits on an edge.
"""

from __future__ import annotations

import math

from modelgate.clients.tune.measurement import Measurement
from modelgate.clients.tune.parameters import TUNABLE_PARAMETERS


def refine_overrides(best: Measurement, measured: list[Measurement], names: list[str]) -> list[dict[str, str]]:
    """Proposed overrides (the caller drops those already measured)."""
    proposals = []
    for name in names:
        parameter = TUNABLE_PARAMETERS[name]
        value = _integer(best.settings.get(name))
        if not parameter.refinable or value is None:
            continue
        tried = sorted({v for m in measured if (v := _integer(m.settings.get(name))) is not None})
        for new in _neighbours(value, tried, parameter.minimum, parameter.maximum):
            proposals.append({**best.overrides, name: str(new)})
    return proposals


def _neighbours(value: int, tried: list[int], minimum: float | None, maximum: float | None) -> list[int]:
    lower = [v for v in tried if v < value]
    upper = [v for v in tried if v > value]
    below = _midpoint(lower[-1], value) if lower else value // 2
    above = _midpoint(value, upper[0]) if upper else value * 2
    if maximum is not None:
        above = min(above, int(maximum))
    found = []
    if (minimum is None or below >= minimum) and below < value and below not in tried:
        found.append(below)
    if above > value and above not in tried:
        found.append(above)
    return found


def _midpoint(low: int, high: int) -> int:
    return round(math.sqrt(low * high)) if low > 0 else (low + high) // 2


def _integer(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None
