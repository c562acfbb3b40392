"""Whether an inference response goes out compressed: what Accept-Encoding allows, and only where it pays.

As Triton, the server deflates or gzips an inference response when the request's Accept-Encoding names
`deflate` or `gzip`. Not below MIN_COMPRESSED_BYTES, though: deflating a few hundred bytes saves a few dozen
and costs the event loop ~20 us per response (zlib sets up a stream of ~256 KiB for each one), 10% of add_sub's
rate over HTTP JSON on one core (4,130 -> 4,568 req/s, medians of 3 interleaved runs). An uncompressed body
is always acceptable (RFC 9110, 12.5.3) unless the client rules identity out (`identity;q=0`, or `*;q=0`
without naming identity): then even a small body is compressed.
"""

from __future__ import annotations

import functools

from aiohttp import web

MIN_COMPRESSED_BYTES = 1024
COMPRESSIONS = ("gzip", "deflate")


def compress_if_asked(accept_encoding: str, response: web.Response) -> web.Response:
    """`response`, set to be compressed when `accept_encoding` asks for it and its body is worth it."""
    accepted = accept_encoding.lower()
    if not any(name in accepted for name in COMPRESSIONS):
        return response
    if len(response.body) >= MIN_COMPRESSED_BYTES or refuses_identity(accepted):
        response.enable_compression()
    return response


@functools.lru_cache(maxsize=256)  # clients send the same few headers: parse each once
def refuses_identity(accept_encoding: str) -> bool:
    """Whether the header rules out an uncompressed body: identity at q=0, or `*` at q=0 with identity unnamed."""
    weights = {}
    for part in accept_encoding.lower().split(","):
        name, _, parameters = part.partition(";")
        weights[name.strip()] = _quality(parameters)
    if "identity" in weights:
        return weights["identity"] == 0
    return weights.get("*") == 0


def _quality(parameters: str) -> float:
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip() == "q":
            try:
                return float(value)
            except ValueError:
                return 1.0  # a malformed weight: as if none were given
    return 1.0
