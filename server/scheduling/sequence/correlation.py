"""A request's sequence parameters, as Triton's sequence extension defines them.

`sequence_id` is a uint64 or a string; 0 or "" (or no parameter) means the request belongs to no sequence.
`sequence_start` / `sequence_end` are booleans that mark the first and last request of a sequence; either set
to true needs a sequence id. HTTP sends them in the request's JSON `parameters`, gRPC as request parameters
(tritonclient writes an integer id as `int64_param`), so both arrive here as plain values.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.core.errors import InvalidArgumentError

MAX_UINT64 = 2**64 - 1
PARAMETER_NAMES = ("sequence_id", "sequence_start", "sequence_end")


@dataclass(frozen=True)
class SequenceFlags:
    sequence_id: int | str
    is_start: bool
    is_end: bool

    @property
    def key(self) -> tuple[type, int | str]:
        """Sequences are told apart by id and its type: 42 and "42" are two sequences."""
        return type(self.sequence_id), self.sequence_id


def read_sequence_flags(parameters: dict) -> SequenceFlags | None:
    """The request's sequence flags, None when it belongs to no sequence; InvalidArgumentError for bad values."""
    sequence_id = _sequence_id(parameters.get("sequence_id"))
    is_start = _flag(parameters, "sequence_start")
    is_end = _flag(parameters, "sequence_end")
    if sequence_id is None:
        if is_start or is_end:
            raise InvalidArgumentError(
                "request parameters 'sequence_start' and 'sequence_end' need a non-zero (or non-empty) 'sequence_id'"
            )
        return None
    return SequenceFlags(sequence_id, is_start, is_end)


def has_sequence_parameters(parameters: dict) -> bool:
    """Whether the request names a sequence (a non-zero id, or a start or end flag set)."""
    return any(parameters.get(name) not in (None, 0, "", False) for name in PARAMETER_NAMES)


def _sequence_id(value) -> int | str | None:
    if isinstance(value, bool):
        raise InvalidArgumentError(
            f"request parameter 'sequence_id' must be an unsigned 64-bit integer or a string, got {value!r}"
        )
    if value is None or value == 0 or value == "":
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, int) or not 0 < value <= MAX_UINT64:
        raise InvalidArgumentError(
            f"request parameter 'sequence_id' must be an unsigned 64-bit integer or a string, got {value!r}"
        )
    return value


def _flag(parameters: dict, name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"request parameter '{name}' must be a boolean, got {value!r}")
    return value
