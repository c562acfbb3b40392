"""Server-sent events from an aiohttp response: the `data` of each event, as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import ClientResponse


async def sse_data(response: ClientResponse) -> AsyncIterator[str]:
    """Each event's data (multi-line data joined by newlines); comments and other fields skipped."""
    lines: list[str] = []
    async for raw in response.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)
