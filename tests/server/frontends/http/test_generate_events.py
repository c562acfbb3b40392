"""generate_stream's events: the encoder's bytes are those of encoding the whole response, whatever it holds,
and an event written at once is framed as aiohttp frames what it writes."""

from __future__ import annotations

import json
import types

import msgspec
import numpy as np
import pytest
from aiohttp.http import HttpVersion10, HttpVersion11

from modelgate.core.errors import ModelExecutionError, UnavailableError
from modelgate.core.inference_types import InferResponse, InferTensor
from modelgate.server.frontends.http.event_writer import HIGH_WATER_BYTES, EventWriter, event, event_of
from modelgate.server.frontends.http.generate_codec import encode_generate_response
from modelgate.server.frontends.http.generate_events import HEAD_KEYS, GenerateEventEncoder

LLM_VALUES = {"text_output": " wörd", "finish_reason": "", "num_input_tokens": 3, "num_output_tokens": 1}


def _whole(response: InferResponse) -> bytes:
    """The event's JSON as the general path builds it: the mapping of encode_generate_response, encoded."""
    if response.error is not None:
        return msgspec.json.encode({"error": response.error.message})
    try:
        return msgspec.json.encode(encode_generate_response(response))
    except ModelExecutionError as exc:
        return msgspec.json.encode({"error": exc.message})


def _text(text: str) -> InferTensor:
    return InferTensor("text_output", "BYTES", (1,), np.array([text.encode()], dtype=object))


RESPONSES = {
    "values": InferResponse("tiny", "1", values=LLM_VALUES),
    "values and an id": InferResponse("tiny", "1", id="req-7", values=LLM_VALUES),
    "no values": InferResponse("tiny", "1", id="req-7", values={}),
    "a value named id": InferResponse("tiny", "1", id="req-7", values={"id": "mine", "text_output": "x"}),
    "a value named model_name": InferResponse("tiny", "1", values={"model_name": "other"}),
    "parameters": InferResponse("tiny", "1", values={"text_output": "x"}, parameters={"p": 1, "text_output": "y"}),
    "tensors": InferResponse("tiny", "1", outputs=[_text("tensor text")]),
    "bytes that are not UTF-8": InferResponse(
        "tiny", "1", outputs=[InferTensor("raw", "BYTES", (1,), np.array([b"\xff"], dtype=object))]
    ),
    "an error": InferResponse("tiny", "1", id="req-7", error=UnavailableError("the engine stopped")),
    "quotes in names": InferResponse('ti"ny', "1", id='a"b\\', values=LLM_VALUES),
}


@pytest.mark.parametrize("name", RESPONSES)
def test_an_event_is_the_whole_response_encoded(name):
    response = RESPONSES[name]
    assert GenerateEventEncoder().encode(response) == _whole(response)
    json.loads(GenerateEventEncoder().encode(response))  # and is JSON


def test_one_encoder_follows_responses_whose_first_keys_change():
    encoder = GenerateEventEncoder()
    responses = [RESPONSES[name] for name in RESPONSES] * 2
    assert [encoder.encode(response) for response in responses] == [_whole(response) for response in responses]


class _Transport:
    def __init__(self):
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


@pytest.mark.parametrize("version", [HttpVersion11, HttpVersion10])
def test_an_event_written_at_once_is_framed_as_write_now_frames_it(version):
    framed = []
    for write in ("write_event_now", "write_now"):
        writer = EventWriter(types.SimpleNamespace(version=version))
        writer._transport = _Transport()
        payload = GenerateEventEncoder().encode(RESPONSES["values"])
        if write == "write_event_now":
            writer.write_event_now(payload)
        else:
            writer.write_now(event_of(payload))
        framed.append(writer._transport.written)
    assert framed[0] == framed[1]
    assert event_of(b'{"a":1}') == event({"a": 1})


class _LiveTransport(_Transport):
    """A connection with `buffered` bytes unsent, open unless `closing`."""

    def __init__(self, buffered: int = 0, closing: bool = False):
        super().__init__()
        self.buffered, self.closing = buffered, closing

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


def _started_writer(version, transport: _LiveTransport) -> EventWriter:
    writer = EventWriter(types.SimpleNamespace(version=version))
    writer._transport, writer._has_written = transport, True  # as after start() and the first event
    return writer


@pytest.mark.parametrize("version", [HttpVersion11, HttpVersion10])
@pytest.mark.parametrize("name", ["values", "values and an id", "no values", "quotes in names"])
def test_values_written_at_once_are_the_whole_response_written_at_once(name, version):
    response = RESPONSES[name]
    events = GenerateEventEncoder()
    events.encode(response)  # the stream's first event: its model, version and id
    later = {**(response.values or {}), "text_output": "next", "num_output_tokens": 2} if response.values else {}
    same_identity = InferResponse(response.model_name, response.model_version, id=response.id, values=later)
    by_values, by_response = _started_writer(version, _LiveTransport()), _started_writer(version, _LiveTransport())
    assert by_values.object_writer(events.head, HEAD_KEYS)(later)
    by_response.write_event_now(_whole(same_identity))
    assert by_values._transport.written == by_response._transport.written


def test_values_with_a_key_of_the_head_or_for_a_client_behind_or_gone_are_not_written():
    events = GenerateEventEncoder()
    assert events.head is None  # no first event yet: nothing to write values behind
    events.encode(RESPONSES["values"])
    transport = _LiveTransport()
    write = _started_writer(HttpVersion11, transport).object_writer(events.head, HEAD_KEYS)
    assert not write({"id": "mine"}) and not write({"model_version": "2", "text_output": "x"})
    transport.buffered = HIGH_WATER_BYTES + 1
    assert not write(LLM_VALUES)
    transport.buffered, transport.closing = 0, True
    assert not write(LLM_VALUES)
    assert transport.written == []
