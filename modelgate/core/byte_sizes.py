"""Memory sizes as people write them: `2147483648`, `2GiB`, `512MB`, `1.5G`; limits may be fractions (`0.8`,
`80%`) of a device's total."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
ALLOWED = "a byte count such as 2147483648, 2GiB, 512MB or 1.5G"


def parse_bytes(text: str) -> int:
    """Bytes from `text`; ValueError saying what is allowed otherwise."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"'{text}' is not {ALLOWED}")
    value = float(match.group(1)) * _UNITS[unit]
    if value < 1:
        raise ValueError(f"'{text}' is less than one byte")
    return int(value)


def parse_limit(text: str, total_bytes: int) -> int:
    """A limit on a device of `total_bytes`: a fraction (`0.8`, `80%`, in (0, 1]) of it, or a size."""
    stripped = text.strip()
    try:
        if stripped.endswith("%"):
            fraction = float(stripped[:-1]) / 100
        elif "." in stripped and not any(c.isalpha() for c in stripped):
            fraction = float(stripped)
        else:
            return min(parse_bytes(stripped), total_bytes)
    except ValueError:
        raise ValueError(f"'{text}' is neither a fraction such as 0.8 or 80% nor {ALLOWED}") from None
    if not 0 < fraction <= 1:
        raise ValueError(f"'{text}': a fraction of the device must be in (0, 1]")
    return int(fraction * total_bytes)


def gib(count: int) -> str:
    """A size for messages: GiB with one decimal, MiB below 1 GiB."""
    if count >= 2**30:
        return f"{count / 2**30:.1f} GiB"
    return f"{count / 2**20:.0f} MiB"
