"""What an attention backend works out from a step's sequences once, for all the step's layers.

Every layer of a step launches the same attention pieces with the same bounds: worked out again per layer,
that Python (and, for some bounds, a device op) is paid 32 times per step. `AttentionMetadata.derived` is the
step's dict for it; `once_per_step` computes an entry the first time a layer asks and returns the kept one after.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any


def once_per_step(derived: dict | None, key: Hashable, derive: Callable[..., Any], *arguments) -> Any:
    """derive(*arguments), kept in the step's `derived` under `key` (the backend's own keys: a name and the
    run); without a `derived` (a caller outside a step), computed each time."""
    if derived is None:
        return derive(*arguments)
    found = derived.get(key)
    if found is None:
        found = derived[key] = derive(*arguments)
    return found
