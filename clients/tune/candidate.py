"""A candidate: engine settings to serve the model with, as overrides of the model's own config.

Invariants: `overrides` holds only values that differ from the model's effective settings, so the baseline (the
model's config as it is) has none; `settings` is the whole picture (engine defaults, then the model's config,
then the overrides) and its canonical JSON is the candidate's `key`, so two candidates that serve the model the
same way are one candidate, whichever way they were spelt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from modelgate.clients.tune.parameters import TUNABLE_PARAMETERS, canonical_value


@dataclass(frozen=True)
class Candidate:
    overrides: tuple[tuple[str, str], ...]  # sorted (name, canonical value)
    settings: tuple[tuple[str, str], ...]  # sorted: every tunable setting with a known value

    @property
    def key(self) -> str:
        return json.dumps(dict(self.settings), sort_keys=True)

    @property
    def id(self) -> str:
        """A short, stable name (file names, plot labels)."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:8]

    @property
    def is_baseline(self) -> bool:
        return not self.overrides

    @property
    def label(self) -> str:
        return " ".join(f"{name}={value}" for name, value in self.overrides) or "the model's config"

    def value(self, name: str) -> str | None:
        return dict(self.settings).get(name)


def model_settings(parameters: dict[str, str]) -> dict[str, str]:
    """The effective tunable settings of a config's `parameters`: the engine's defaults, then the config's own.

    A config value that is not valid for its setting is kept as written: the server will say what is wrong.
    """
    settings = {name: p.default for name, p in TUNABLE_PARAMETERS.items() if p.default is not None}
    for name, text in parameters.items():
        if name in TUNABLE_PARAMETERS:
            try:
                settings[name] = canonical_value(name, text)
            except ValueError:
                settings[name] = text
    return settings


def make_candidate(base: dict[str, str], overrides: dict[str, str]) -> Candidate:
    """The candidate of `overrides` (checked, canonical) on `base` (the model's effective settings)."""
    changed = {name: canonical_value(name, value) for name, value in overrides.items()}
    changed = {name: value for name, value in changed.items() if base.get(name) != value}
    return Candidate(tuple(sorted(changed.items())), tuple(sorted({**base, **changed}.items())))
