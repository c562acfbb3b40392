"""`--rate-limit-resource <name>:<count>[:<device>]` values, as Triton reads them.

A value without a device applies to every device; one with a device to that device only. For a resource that
the model configs call global the device is ignored (Triton's words). Names are case-insensitive, as Triton's
flag values are, so they are kept lower-cased.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FLAG = "--rate-limit-resource"
_FORMAT = "<name>:<count>[:<device>] (count and device whole numbers >= 0, e.g. R1:4 or R1:4:0)"


@dataclass(frozen=True)
class ExplicitResources:
    """The counts given on the command line: resource name (lower case) -> device (None: every device) -> count."""

    counts: dict[str, dict[int | None, int]] = field(default_factory=dict)

    def names(self) -> set[str]:
        return set(self.counts)

    def per_device(self, name: str, device: int) -> int | None:
        """The count of `name` on `device`; None where the flags do not name the resource at all. A resource
        named only for other devices has 0 here (Triton: 'limited to 0')."""
        given = self.counts.get(name)
        if given is None:
            return None
        return given.get(device, given.get(None, 0))

    def shared(self, name: str) -> int | None:
        """The count of a global resource: the value without a device, else the largest given (the device is
        ignored for global resources); None where the flags do not name it."""
        given = self.counts.get(name)
        if given is None:
            return None
        return given[None] if None in given else max(given.values())


def parse_rate_limit_resources(values: list[str]) -> ExplicitResources:
    """Parse every flag value; ValueError naming the value and the format allowed (a resource and device given
    twice is an error, not a silent override)."""
    counts: dict[str, dict[int | None, int]] = {}
    for value in values:
        name, count, device = _parse_one(value)
        per_name = counts.setdefault(name, {})
        if device in per_name:
            where = "every device" if device is None else f"device {device}"
            raise ValueError(f"'{value}': resource '{name}' is given twice for {where}")
        per_name[device] = count
    return ExplicitResources(counts)


def _parse_one(value: str) -> tuple[str, int, int | None]:
    parts = value.strip().split(":")
    if len(parts) not in (2, 3) or not parts[0].strip():
        raise ValueError(f"'{value}': expected {_FORMAT}")
    count = _whole_number(parts[1], "count", value)
    device = _whole_number(parts[2], "device", value) if len(parts) == 3 else None
    return parts[0].strip().lower(), count, device


def _whole_number(text: str, what: str, value: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"'{value}': the {what} '{text}' is not a whole number >= 0; expected {_FORMAT}")
    return int(text)
