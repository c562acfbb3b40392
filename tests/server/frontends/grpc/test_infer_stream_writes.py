"""ModelStreamInfer written through the call's response writer (write_infer_stream) against the queued path
(serve_infer_stream) over one fake model: the same messages in the same order, an LLM's tokens as bytes
through the values writer, a slow client holding tokens back until it catches up, and cancellation reaching
the model while the session waits for its requests to finish."""

from __future__ import annotations

import asyncio

from tritonclient.grpc import service_pb2

from modelgate.core.inference_types import InferResponse
from modelgate.core.response_stream import ResponseStream
from modelgate.server.frontends.grpc.stream_infer import serve_infer_stream, write_infer_stream

MODEL = "llm"
OUTPUTS = {"text_output": "BYTES", "num_output_tokens": "INT32"}
TOKENS = [" The", " capital", " of", " France", " is", " Paris", "."]


class TokenModel:
    """What the LLM backend does per request: its first token sent as a response, every later one offered to
    the stream's values writer first (`try_write_values`) and sent when refused, the last with the final flag.
    Tokens come one per loop turn, as an engine's steps do, unless `gate` (an Event) holds them."""

    def __init__(self):
        self.offered = 0  # tokens offered to a values writer
        self.taken = 0  # ... and taken by it
        self.streams: list[ResponseStream] = []
        self.gate: asyncio.Event | None = None

    async def generate(self, stream: ResponseStream, request_id: str) -> None:
        for index, text in enumerate(TOKENS):
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
            if stream.is_cancelled():
                return
            values = {"text_output": text, "num_output_tokens": index + 1}
            is_final = index == len(TOKENS) - 1
            if index and not is_final:
                self.offered += 1
                if stream.try_write_values(values):
                    self.taken += 1
                    continue
            stream.send(InferResponse(MODEL, "1", id=request_id, values=values), is_final)


class FakeDataplane:
    def __init__(self, model: TokenModel):
        self.model = model
        self.tasks: list[asyncio.Task] = []

    async def infer_stream(self, request) -> ResponseStream:
        assert request.can_take_output_values
        stream = ResponseStream(asyncio.get_running_loop())
        self.model.streams.append(stream)
        self.tasks.append(asyncio.create_task(self.model.generate(stream, request.id)))
        return stream

    def model_metadata(self, name: str, version: str = "") -> dict:
        return {"outputs": [{"name": name, "datatype": datatype} for name, datatype in OUTPUTS.items()]}


class RecordingWriter:
    """A ResponseWriter that keeps what it was given, serialized, and how; `behind` (a future) stands for a
    client that does not keep up until it completes."""

    def __init__(self):
        self.written: list[bytes] = []
        self.ways: list[str] = []
        self.behind: asyncio.Future | None = None

    def write(self, response) -> None:
        self.written.append(response.SerializeToString())
        self.ways.append("message")

    def write_serialized(self, serialized: bytes) -> None:
        self.written.append(serialized)
        self.ways.append("serialized")

    def try_write_serialized(self, serialized: bytes) -> bool:
        if self.behind is not None:
            return False
        self.written.append(serialized)
        self.ways.append("bytes")
        return True

    def drained(self) -> asyncio.Future | None:
        return self.behind

    def catch_up(self) -> None:
        self.behind.set_result(None)
        self.behind = None

    def messages(self) -> list[service_pb2.ModelStreamInferResponse]:
        return [service_pb2.ModelStreamInferResponse.FromString(data) for data in self.written]


def _request(request_id: str) -> service_pb2.ModelInferRequest:
    return service_pb2.ModelInferRequest(model_name=MODEL, id=request_id)


async def _requests(*ids: str, held_open: asyncio.Event | None = None):
    for request_id in ids:
        yield _request(request_id)
    if held_open is not None:
        await held_open.wait()


def _texts(messages, request_id: str) -> list[str]:
    texts = []
    for message in messages:
        response = message.infer_response
        if response.id == request_id:
            texts.append(response.raw_output_contents[0][4:].decode())
    return texts


async def _queued_messages(*ids: str) -> list[service_pb2.ModelStreamInferResponse]:
    return [message async for message in serve_infer_stream(FakeDataplane(TokenModel()), _requests(*ids))]


async def test_written_messages_are_the_messages_the_queued_path_yields_and_tokens_go_as_bytes():
    model, writer = TokenModel(), RecordingWriter()
    await write_infer_stream(FakeDataplane(model), _requests("a"), writer)
    assert writer.messages() == await _queued_messages("a")
    assert _texts(writer.messages(), "a") == TOKENS
    # The first token builds the template and goes serialized, as the final one does; every other one goes as
    # bytes through the values writer. No message is built.
    assert model.taken == model.offered == len(TOKENS) - 2
    assert writer.ways == ["serialized"] + ["bytes"] * (len(TOKENS) - 2) + ["serialized"]
    finals = [message.infer_response.parameters["triton_final_response"].bool_param for message in writer.messages()]
    assert finals == [False] * (len(TOKENS) - 1) + [True]


async def test_interleaved_requests_each_get_their_own_tokens_in_order():
    model, writer = TokenModel(), RecordingWriter()
    await write_infer_stream(FakeDataplane(model), _requests("a", "b", "c"), writer)
    messages = writer.messages()
    assert {_texts(messages, request_id) == TOKENS for request_id in "abc"} == {True}
    assert model.taken == 3 * (len(TOKENS) - 2)
    assert sorted(message.SerializeToString() for message in messages) == sorted(
        message.SerializeToString() for message in await _queued_messages("a", "b", "c")
    )


async def test_a_client_behind_holds_tokens_back_until_it_caught_up_and_then_gets_them_in_order():
    model, writer = TokenModel(), RecordingWriter()
    model.gate = asyncio.Event()
    model.gate.set()
    session = asyncio.create_task(write_infer_stream(FakeDataplane(model), _requests("a"), writer))
    while len(writer.written) < 2:  # the first token (serialized) and the second (bytes, the values writer)
        await asyncio.sleep(0)
    writer.behind = asyncio.get_running_loop().create_future()
    for _ in range(20):  # the rest of the tokens are generated while the client is behind
        await asyncio.sleep(0)
    assert len(writer.written) == 2
    assert model.taken == 1 and model.offered == len(TOKENS) - 2  # refused: sent as responses, queued
    writer.catch_up()
    await asyncio.wait_for(session, 5)
    assert _texts(writer.messages(), "a") == TOKENS
    assert writer.ways == ["serialized", "bytes"] + ["serialized"] * (len(TOKENS) - 2)


async def test_cancelling_the_session_while_it_waits_for_its_requests_cancels_them():
    model, writer = TokenModel(), RecordingWriter()
    model.gate = asyncio.Event()
    dataplane = FakeDataplane(model)
    # The client half-closed after its one request: the session waits for that request to finish.
    session = asyncio.create_task(write_infer_stream(dataplane, _requests("a"), writer))
    while not model.streams:
        await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    session.cancel()  # the RPC ended (a client cancel)
    await asyncio.gather(session, return_exceptions=True)
    assert model.streams[0].is_cancelled()
    model.gate.set()
    await asyncio.wait_for(asyncio.gather(*dataplane.tasks), 5)
    assert writer.written == []
