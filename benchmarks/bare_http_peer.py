"""The peer for HTTP benchmarks: a bare aiohttp server that answers POSTs with fixed bytes.

It runs the same HTTP stack as modelgate (aiohttp on uvloop where installed, an `AppRunner`
without access log, the same `client_max_size`), reads the whole request body as modelgate
does, and answers with a response recorded from modelgate beforehand: same body, same
content type, same `Inference-Header-Content-Length`. No decoding, no inference, so its
speed is the limit of the HTTP stack on this machine.

    python benchmarks/bare_http_peer.py --port 8100 --responses responses.json

`responses.json` maps an encoding ("json", "binary") to {"body_base64", "content_type",
"header_length"}; a request with an `Inference-Header-Content-Length` header gets "binary".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_BODY_BYTES = 1 << 40  # no limit a benchmark body reaches (modelgate: --http-max-input-size)


@dataclass(frozen=True)
class FixedResponse:
    body: bytes
    content_type: str
    header_length: int | None

    def to_web_response(self) -> web.Response:
        # Built per request, as modelgate builds its reply, so header serialization costs the same.
        reply = web.Response(body=self.body, content_type=self.content_type)
        if self.header_length is not None:
            reply.headers[HEADER_LENGTH] = str(self.header_length)
        return reply


def load_responses(path: Path) -> dict[str, FixedResponse]:
    raw = json.loads(path.read_text())
    return {
        encoding: FixedResponse(base64.b64decode(r["body_base64"]), r["content_type"], r["header_length"])
        for encoding, r in raw.items()
    }


def save_responses(path: Path, responses: dict[str, FixedResponse]) -> None:
    """Write `responses` in the format `load_responses` reads."""
    raw = {
        encoding: {
            "body_base64": base64.b64encode(r.body).decode(),
            "content_type": r.content_type,
            "header_length": r.header_length,
        }
        for encoding, r in responses.items()
    }
    path.write_text(json.dumps(raw))


def create_app(responses: dict[str, FixedResponse]) -> web.Application:
    async def infer(request: web.Request) -> web.Response:
        await request.read()
        encoding = "binary" if HEADER_LENGTH in request.headers else "json"
        return responses[encoding].to_web_response()

    async def ready(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v2/models/{name}/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    return app


async def serve(port: int, responses: dict[str, FixedResponse]) -> None:
    """Serve on 127.0.0.1:`port` until SIGINT/SIGTERM."""
    runner = web.AppRunner(create_app(responses), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def event_loop_runner():
    """uvloop where installed, asyncio's loop otherwise: the choice `modelgate serve` makes."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--responses", type=Path, required=True, help="JSON file of the fixed responses")
    args = parser.parse_args()
    event_loop_runner()(serve(args.port, load_responses(args.responses)))


if __name__ == "__main__":
    main()
