"""The envelope of a streamed OpenAI response's chunks, encoded once for all of them.

Every chunk is `{"id":...,"object":...,"created":...,"model":...,"choices":[...]}` with the same four first
fields (OpenAI: each chunk has the same `created`), and a streamed LLM response sends one chunk per token. The
envelope keeps those fields encoded and puts each chunk's choices behind them; the bytes are those of encoding
the whole chunk.
"""

from __future__ import annotations

import time

import msgspec

from modelgate.server.frontends.openai.responses import envelope

_encode_json = msgspec.json.Encoder().encode


class ChunkEnvelope:
    def __init__(self, object_type: str, response_id: str, model: str):
        self.object_type, self.response_id, self.model = object_type, response_id, model
        self.created = int(time.time())
        # `{...,"choices":[` : the encoding of the envelope without choices, less its closing `]}`
        self._head = _encode_json(self.chunk([]))[:-2]

    def chunk(self, choices: list[dict]) -> dict:
        """A chunk as a mapping (the usage chunk adds a key to it)."""
        return envelope(self.object_type, self.response_id, self.model, choices, self.created)

    def encode(self, choice: dict) -> bytes:
        """The JSON of a chunk holding the one `choice`: paid per streamed token."""
        return self._head + _encode_json(choice) + b"]}"
