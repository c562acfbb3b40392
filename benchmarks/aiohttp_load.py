"""Fallback load generator when `wrk` is missing: a fixed number of aiohttp workers in a closed loop.

Each worker POSTs the same body over its own keep-alive connection and waits for the answer
before sending the next, as a wrk connection does. It prints one line in the format of the
benchmarks' wrk Lua script:

    RESULT requests=N duration_us=D p50_us=X p99_us=Y errors=E

Python is much slower than wrk at generating load; prefer wrk (`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import aiohttp
import numpy as np


async def worker(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict, deadline: float, latencies_us: list[float]
) -> int:
    """Send requests until `deadline`; append each latency; return the number of non-2xx answers."""
    errors = 0
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            errors += response.status >= 300
        latencies_us.append((time.perf_counter() - started) * 1e6)
    return errors


async def generate(url: str, body: bytes, headers: dict, concurrency: int, duration_s: float) -> str:
    latencies_us: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        deadline = started + duration_s
        errors = await asyncio.gather(
            *(worker(session, url, body, headers, deadline, latencies_us) for _ in range(concurrency))
        )
        elapsed_us = (time.perf_counter() - started) * 1e6
    p50, p99 = np.percentile(latencies_us, [50, 99]) if latencies_us else (0.0, 0.0)
    return (
        f"RESULT requests={len(latencies_us)} duration_us={elapsed_us:.0f} "
        f"p50_us={p50:.1f} p99_us={p99:.1f} errors={sum(errors)}"
    )


def parse_header(text: str) -> tuple[str, str]:
    name, _, value = text.partition(":")
    return name.strip(), value.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    args = parser.parse_args()
    headers = dict(parse_header(h) for h in args.header)
    print(asyncio.run(generate(args.url, args.body_file.read_bytes(), headers, args.concurrency, args.duration)))


if __name__ == "__main__":
    main()
