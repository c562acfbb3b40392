"""The one error `modelgate tune` raises for what its user gave it (the command prints it and exits 2)."""

from __future__ import annotations


class TuneInputError(ValueError):
    """A model folder, search space, trace or output folder that cannot be tuned as given; says what is allowed."""
