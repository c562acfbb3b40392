"""The envelope of streamed chunks: the bytes of the whole chunk encoded, and one `created` for the response."""

from __future__ import annotations

import json

import msgspec
import pytest

from modelgate.server.frontends.openai import chunk_envelope, responses
from modelgate.server.frontends.openai.chunk_envelope import ChunkEnvelope

CHOICES = [
    {"index": 0, "text": ' wörd "quoted"\n', "logprobs": None, "finish_reason": None},
    {"index": 3, "delta": {}, "logprobs": {"content": [{"token": "a", "logprob": -0.5}]}, "finish_reason": "length"},
    {"index": 1, "delta": {"content": "🙂"}, "logprobs": None, "finish_reason": "stop"},
]


@pytest.mark.parametrize("choice", CHOICES)
def test_a_chunk_is_the_whole_chunk_encoded(choice):
    envelope = ChunkEnvelope("chat.completion.chunk", 'chatcmpl-"1"', "tiny/ünïcode")
    encoded = envelope.encode(choice)
    assert encoded == msgspec.json.encode(envelope.chunk([choice]))
    assert json.loads(encoded)["choices"] == [choice]


def test_every_chunk_carries_the_time_the_response_was_created(monkeypatch):
    now = [1_700_000_000.2]
    for module in (chunk_envelope, responses):
        monkeypatch.setattr(module.time, "time", lambda: now[0])
    envelope = ChunkEnvelope("text_completion", "cmpl-1", "tiny")
    now[0] += 5  # a stream that outlives a second
    first, later = json.loads(envelope.encode(CHOICES[0])), envelope.chunk([])
    assert first["created"] == later["created"] == 1_700_000_000
    assert [first["id"], first["object"], first["model"]] == ["cmpl-1", "text_completion", "tiny"]
    assert list(first) == ["id", "object", "created", "model", "choices"]  # OpenAI's order, as before
