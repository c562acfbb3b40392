"""The JSON of generate_stream's events, with what every event of a stream repeats encoded once.

An event is the response as `encode_generate_response` maps it (`model_name`, `model_version`, `id`, then the
outputs and parameters), or `{"error": ...}`. An LLM stream answers with one-element values, one event per
token, and its first keys never change: the encoder keeps them encoded and appends each response's values,
encoded alone, behind them; the bytes are those of encoding the whole mapping. Whatever else (tensors,
parameters, an error, a value named like one of the first keys) takes the general path.
"""

from __future__ import annotations

import msgspec

from modelgate.core.errors import ModelgateError
from modelgate.core.inference_types import InferResponse
from modelgate.server.frontends.http.generate_codec import encode_generate_response

_encode_json = msgspec.json.Encoder().encode  # a tenth of json.dumps' time: paid per streamed token
HEAD_KEYS = frozenset(("model_name", "model_version", "id"))


class GenerateEventEncoder:
    """One stream's events; not thread-safe (the loop encodes them)."""

    def __init__(self):
        self._key: tuple[str, str, str] | None = None  # model_name, model_version, id of `_head`
        self._head = b""  # `{"model_name":...,"model_version":...[,"id":...]` of `_key`

    def encode(self, response: InferResponse) -> bytes:
        """The event's JSON: the response, or its error (the stream has started: no status)."""
        values = response.values
        if response.error is not None or values is None or response.outputs or response.parameters:
            return _encode_json(_general_event(response))
        if "model_name" in values or "model_version" in values or "id" in values:
            return _encode_json(_general_event(response))
        head = self._head_of(response)
        if not values:
            return head + b"}"
        return head + b"," + _encode_json(values)[1:]  # the values' object, its `{` dropped

    @property
    def head(self) -> bytes | None:
        """The first members of the last response encoded, as JSON (`{"model_name":...,"model_version":...
        [,"id":...]`, no closing brace), or None before any; HEAD_KEYS are their keys."""
        return self._head if self._key is not None else None

    def _head_of(self, response: InferResponse) -> bytes:
        key = (response.model_name, response.model_version, response.id)
        if key != self._key:
            head = {"model_name": response.model_name, "model_version": response.model_version}
            if response.id:
                head["id"] = response.id
            self._key, self._head = key, _encode_json(head)[:-1]  # its `}` dropped
        return self._head


def _general_event(response: InferResponse) -> dict:
    if response.error is not None:
        return {"error": response.error.message}
    try:
        return encode_generate_response(response)
    except ModelgateError as exc:
        return {"error": exc.message}
