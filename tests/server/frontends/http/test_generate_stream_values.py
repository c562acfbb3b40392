"""generate_stream writes an LLM's tokens (values-only responses) through the stream's values writer once its
first event is out: in the delivering call, with the bytes of the general path."""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp.test_utils import TestClient, TestServer

from modelgate.core.inference_types import InferResponse
from modelgate.core.response_stream import ResponseStream
from modelgate.server.frontends.http.app import create_http_app
from modelgate.server.frontends.http.generate_codec import encode_generate_response
from modelgate.server.log_settings import LogSettings

TOKENS = [{"text_output": text, "finish_reason": "", "num_output_tokens": n} for n, text in enumerate("abc", 1)]
LAST = {"text_output": "", "finish_reason": "stop", "num_output_tokens": 3}


class _Dataplane:
    """Serves one decoupled model whose stream a test drives (`model`)."""

    def __init__(self, model):
        self.model = model
        self.taken: list[bool] = []  # what try_write_values answered, token by token

    def model_metadata(self, name: str, version: str) -> dict:
        return {"name": name, "versions": ["1"], "platform": "llm", "inputs": [], "outputs": []}

    async def infer_stream(self, request):
        stream = ResponseStream(asyncio.get_running_loop())
        asyncio.get_running_loop().create_task(self.model(stream, request, self.taken))
        return stream


async def _llm(stream: ResponseStream, request, taken: list[bool]) -> None:
    """As the LLM backend sends from the loop: a token's values first to the values writer, else a response."""
    stream.send(InferResponse("tiny", "1", id=request.id, values=TOKENS[0]), is_final=False)
    for values in TOKENS[1:]:
        await asyncio.sleep(0.05)  # the first event is out and the handler waits for the next item
        taken.append(stream.try_write_values(values))
        if not taken[-1]:
            stream.send(InferResponse("tiny", "1", id=request.id, values=values), is_final=False)
    stream.send(InferResponse("tiny", "1", id=request.id, values=LAST), is_final=True)


def _event(values: dict) -> bytes:
    response = InferResponse("tiny", "1", id="req-1", values=values)
    return b"data: " + msgspec.json.encode(encode_generate_response(response)) + b"\n\n"


async def test_tokens_after_the_first_event_go_through_the_values_writer():
    dataplane = _Dataplane(_llm)
    app = create_http_app(dataplane, LogSettings())
    async with TestClient(TestServer(app)) as client:
        reply = await client.post("/v2/models/tiny/generate_stream", json={"id": "req-1"})
        body = await reply.read()
    assert reply.status == 200
    assert body == b"".join(_event(values) for values in [*TOKENS, LAST])
    assert dataplane.taken == [True, True]
