"""The search space: grid axes (`--search NAME=V1,V2`) and explicit points (`--candidate NAME=V,NAME=V`).

The coarse phase measures the baseline, then every point of the grid (the cartesian product of the axes, in
order, the last axis varying fastest), then the explicit points. Without axes or points the default space is
max_num_seqs x max_num_batched_tokens at half, once and twice the model's own values (9 points, the baseline
among them).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from modelgate.clients.tune.model_folder import DERIVED_MIN_BATCHED_TOKENS, ModelFolder
from modelgate.clients.tune.parameters import TUNABLE_PARAMETERS, canonical_value
from modelgate.clients.tune.tune_errors import TuneInputError


@dataclass(frozen=True)
class SearchSpace:
    axes: dict[str, tuple[str, ...]]  # name -> canonical values
    points: tuple[dict[str, str], ...]  # explicit candidates, canonical

    @property
    def names(self) -> list[str]:
        """Every setting the space varies, axes first, in the order given."""
        names = list(self.axes)
        for point in self.points:
            names += [name for name in point if name not in names]
        return names

    def coarse_overrides(self) -> list[dict[str, str]]:
        """The grid's points, then the explicit ones."""
        names = list(self.axes)
        grid = [dict(zip(names, values)) for values in itertools.product(*self.axes.values())] if names else []
        return grid + [dict(point) for point in self.points]


def build_space(axes: dict[str, list[str]], points: list[dict[str, str]], model: ModelFolder) -> SearchSpace:
    """The space as given (names and values checked: TuneInputError), or the default one when both are empty."""
    if not axes and not points:
        axes = default_axes(model)
    checked_axes = {name: _axis(name, values) for name, values in axes.items()}
    checked_points = tuple({name: canonical_value(name, value) for name, value in point.items()} for point in points)
    if any(not point for point in checked_points):
        raise TuneInputError("an explicit candidate must set at least one engine setting")
    return SearchSpace(checked_axes, checked_points)


def default_axes(model: ModelFolder) -> dict[str, list[str]]:
    """max_num_seqs and max_num_batched_tokens at half, once and twice the model's values (or the engine's)."""
    settings = model.settings
    axes = {}
    seqs = settings.get("max_num_seqs", TUNABLE_PARAMETERS["max_num_seqs"].default)
    tokens = settings.get("max_num_batched_tokens", str(DERIVED_MIN_BATCHED_TOKENS))
    for name, base in (("max_num_seqs", seqs), ("max_num_batched_tokens", tokens)):
        if base is not None and base.isdigit():
            axes[name] = _scaled(int(base))
    return axes


def _scaled(base: int) -> list[str]:
    return [str(value) for value in sorted({max(1, base // 2), base, base * 2})]


def _axis(name: str, values: list[str]) -> tuple[str, ...]:
    if not values:
        raise TuneInputError(f"search axis {name} has no values")
    canonical = [canonical_value(name, value) for value in values]
    return tuple(dict.fromkeys(canonical))  # repeated values once, order kept
