"""`--cache-config` values, spelled as Triton's: `<cache>,<key>=<value>`, e.g. `local,size=1048576`.

Only Triton's `local` cache exists here, with its one setting `size` (bytes the cached responses may take).
The flag may repeat, each time for the same cache; anything else is a ValueError that says what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

CACHE_FLAG = "--cache-config"
LOCAL_CACHE = "local"
_KEYS = ("size",)


@dataclass(frozen=True)
class CacheSettings:
    max_bytes: int


def parse_cache_config(values: list[str]) -> CacheSettings | None:
    """The cache the flag values describe; None when the flag was not given."""
    if not values:
        return None
    settings: dict[str, str] = {}
    for value in values:
        name, _, pairs = value.partition(",")
        if name != LOCAL_CACHE:
            raise ValueError(f"{CACHE_FLAG} '{value}': cache '{name}' is not supported; allowed: {LOCAL_CACHE}")
        for pair in filter(None, pairs.split(",")):
            key, sign, setting = pair.partition("=")
            if not sign or key not in _KEYS:
                raise ValueError(f"{CACHE_FLAG} '{value}': '{pair}' is not a setting; allowed: size=<bytes>")
            settings[key] = setting
    if "size" not in settings:
        raise ValueError(f"{CACHE_FLAG}: the local cache needs its size, e.g. {CACHE_FLAG} local,size=1048576")
    return CacheSettings(_size(settings["size"]))


def _size(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{CACHE_FLAG}: size '{text}' must be a whole number of bytes >= 1")
    return int(text)
