"""The OpenAI-compatible handlers: validate the body, run choices through the dataplane, encode."""

from __future__ import annotations

import json
import time

from aiohttp import web
from pydantic import BaseModel, ValidationError

from modelgate.core.bounded_json import loads_bounded
from modelgate.core.errors import InvalidArgumentError, ModelgateError, drop_traceback
from modelgate.server.dataplane import Dataplane
from modelgate.server.frontends.http.event_writer import EVENT_HEADERS, EventWriter, encode_json, event, event_of
from modelgate.server.frontends.openai.chunk_envelope import ChunkEnvelope
from modelgate.server.frontends.openai.generation import (
    ChoiceDelta,
    check_llm_model,
    llm_model_names,
    merged_deltas,
    start_choices,
    start_prompts,
    values_delta,
)
from modelgate.server.frontends.openai.responses import (
    chat_logprobs,
    completion_id,
    completion_logprobs,
    envelope,
    openai_error,
    usage,
)
from modelgate.server.frontends.openai.schemas import ChatCompletionRequest, CompletionRequest


def add_openai_routes(app: web.Application, dataplane: Dataplane) -> None:
    handlers = _OpenAIHandlers(dataplane)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_post("/v1/completions", handlers.completions)
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)


class _OpenAIHandlers:
    def __init__(self, dataplane: Dataplane):
        self.dataplane = dataplane

    async def models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "modelgate"}
            for name in llm_model_names(self.dataplane)
        ]
        return web.json_response({"object": "list", "data": data})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _parse(request, CompletionRequest)
            check_llm_model(self.dataplane, body.model)
            prompts = body.prompts
            sampling = body.sampling_fields(body.max_tokens, body.logprobs)
            prompt_inputs = [("text_input" if isinstance(p, str) else "input_ids", p) for p in prompts]
            started = await start_prompts(self.dataplane, body.model, prompt_inputs, sampling, body.n)
        except ModelgateError as exc:
            drop_traceback(exc)  # see drop_traceback: the frames hold the request body
            return openai_error(exc.http_status, exc.message)
        encoder = _CompletionEncoder(body, prompts)
        return await _respond(request, body, started, encoder)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _parse(request, ChatCompletionRequest)
            check_llm_model(self.dataplane, body.model)
            messages = [{"role": m.role, "content": _message_text(m)} for m in body.messages]
            top = (body.top_logprobs or 0) if body.logprobs else None
            sampling = body.sampling_fields(body.max_completion_tokens or body.max_tokens, top)
            started = await start_choices(
                self.dataplane, body.model, ("chat_messages", json.dumps(messages)), sampling, list(range(body.n))
            )
        except ModelgateError as exc:
            drop_traceback(exc)  # see drop_traceback: the frames hold the request body
            return openai_error(exc.http_status, exc.message)
        return await _respond(request, body, started, _ChatEncoder(body))


async def _respond(request: web.Request, body, started, encoder) -> web.StreamResponse:
    if not body.stream:
        async for delta in merged_deltas(started):
            encoder.add(delta)
        if encoder.error:
            return openai_error(500, encoder.error)
        return web.json_response(encoder.whole())
    writer = EventWriter(request, {**EVENT_HEADERS, "Cache-Control": "no-cache"})
    await writer.start()
    for chunk in encoder.opening_chunks(len(started)):
        await writer.write(event(chunk))

    def write_now(delta: ChoiceDelta) -> bool:
        if not writer.can_write_now():
            return False
        encoder.add(delta)
        writer.write_event_now(_chunk_json(encoder, delta))
        return True

    def write_values_now(index: int, values: dict) -> bool:
        """write_now(values_delta(values, index)) in fewer steps where the encoder has a short path for them."""
        if not writer.can_write_now():
            return False
        chunk = encoder.values_chunk(index, values)
        if chunk is None:
            return write_now(values_delta(values, index))
        writer.write_event_now(chunk)
        return True

    async for delta in merged_deltas(started, write_now, write_values_now):
        encoder.add(delta)
        await writer.write(event_of(_chunk_json(encoder, delta)))
    usage = event(encoder.usage_chunk()) if body.stream_options and body.stream_options.include_usage else b""
    return await writer.finish(usage + b"data: [DONE]\n\n")  # with the end of the body: one write


def _chunk_json(encoder, delta: ChoiceDelta) -> bytes:
    if delta.error is not None:
        return encode_json({"error": {"message": delta.error}})
    return encoder.chunks.encode(encoder.choice(delta))


async def _parse(request: web.Request, schema: type[BaseModel]):
    raw = loads_bounded(await request.read())
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise InvalidArgumentError(problems) from None


def _message_text(message) -> str:
    try:
        return message.text()
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None


class _Accumulator:
    """What the choices said so far: for a whole response everything, for a stream only the usage (its text
    went out chunk by chunk; kept, it would be copied once per token)."""

    def __init__(self, body):
        self.body = body
        self.texts: dict[int, str] = {}
        self.logprobs: dict[int, list] = {}
        self.reasons: dict[int, str | None] = {}
        self.prompt_tokens: dict[int, int] = {}
        self.output_tokens: dict[int, int] = {}
        self.error: str | None = None

    def add(self, delta: ChoiceDelta) -> None:
        if delta.error is not None:
            self.error = delta.error
            return
        index = delta.index
        if not self.body.stream:
            self.texts[index] = self.texts.get(index, "") + delta.text
            self.logprobs.setdefault(index, []).extend(delta.logprobs)
            self.reasons[index] = delta.finish_reason
        self.prompt_tokens[index] = delta.num_prompt_tokens
        self.output_tokens[index] = delta.num_output_tokens

    def _count(self, index: int, values: dict) -> None:
        """What `add` keeps of a streamed delta (the usage), from the values of its response."""
        self.prompt_tokens[index] = int(values["num_input_tokens"])
        self.output_tokens[index] = int(values["num_output_tokens"])

    def usage(self) -> dict:
        n = self.body.n
        prompt = sum(tokens for index, tokens in self.prompt_tokens.items() if index % n == 0)
        return usage(prompt, sum(self.output_tokens.values()))


class _CompletionEncoder(_Accumulator):
    def __init__(self, body: CompletionRequest, prompts: list[str]):
        super().__init__(body)
        self.prompts = prompts
        self.id = completion_id("cmpl")
        self.chunks = ChunkEnvelope("text_completion", self.id, body.model)
        self._offsets: dict[int, int] = {}  # per choice streaming: text offset of its next token
        self._has_logprobs = body.logprobs is not None  # read per token: the request's fields once

    def whole(self) -> dict:
        choices = []
        for index in sorted(self.texts):
            prefix = self.prompts[index // self.body.n] if self.body.echo else ""
            logprobs = (
                completion_logprobs(self.logprobs[index], len(prefix)) if self.body.logprobs is not None else None
            )
            choices.append(
                {
                    "index": index,
                    "text": prefix + self.texts[index],
                    "logprobs": logprobs,
                    "finish_reason": self.reasons[index],
                }
            )
        result = envelope("text_completion", self.id, self.body.model, choices)
        result["usage"] = self.usage()
        return result

    def opening_chunks(self, num_choices: int) -> list[dict]:
        return []

    def choice(self, delta: ChoiceDelta) -> dict:
        """The choice of `delta`'s chunk."""
        text = delta.text
        start = self._offsets.get(delta.index)
        if start is None:  # the choice's first chunk: it carries the echoed prompt
            prefix = self.prompts[delta.index // self.body.n] if self.body.echo else ""
            text, start = prefix + text, len(prefix)
        logprobs = None
        if delta.logprobs:  # text_offset counts from the start of the choice's whole text, as in a whole response
            self._offsets[delta.index] = start + sum(len(entry["token"]) for entry in delta.logprobs)
        else:
            self._offsets[delta.index] = start
        if self.body.logprobs is not None:
            logprobs = completion_logprobs(delta.logprobs, start)
        return {"index": delta.index, "text": text, "logprobs": logprobs, "finish_reason": delta.finish_reason}

    def usage_chunk(self) -> dict:
        chunk = self.chunks.chunk([])
        chunk["usage"] = self.usage()
        return chunk

    def values_chunk(self, index: int, values: dict) -> bytes | None:
        """A streamed choice's chunk JSON from its response's values, as `add` then `choice` of its delta
        would make it, with no delta in between; None (nothing done) where it takes those: logprobs, the
        choice's first chunk (the echoed prompt)."""
        if self._has_logprobs or values.get("logprobs", "[]") != "[]":
            return None
        start = self._offsets.get(index)
        if start is None:
            return None
        self._count(index, values)
        reason = values["finish_reason"] or None
        return self.chunks.encode(
            {"index": index, "text": values["text_output"], "logprobs": None, "finish_reason": reason}
        )


class _ChatEncoder(_Accumulator):
    def __init__(self, body: ChatCompletionRequest):
        super().__init__(body)
        self.id = completion_id("chatcmpl")
        self.chunks = ChunkEnvelope("chat.completion.chunk", self.id, body.model)
        self._has_logprobs = bool(body.logprobs)  # read per token: the request's fields once

    def _logprobs(self, entries: list[dict]):
        return chat_logprobs(entries, self.body.top_logprobs or 0) if self.body.logprobs else None

    def whole(self) -> dict:
        choices = [
            {
                "index": index,
                "message": {"role": "assistant", "content": self.texts[index]},
                "logprobs": self._logprobs(self.logprobs[index]),
                "finish_reason": self.reasons[index],
            }
            for index in sorted(self.texts)
        ]
        result = envelope("chat.completion", self.id, self.body.model, choices)
        result["usage"] = self.usage()
        return result

    def opening_chunks(self, num_choices: int) -> list[dict]:
        """OpenAI opens each choice's stream with the assistant role."""
        return [
            self.chunks.chunk(
                [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
            )
            for i in range(num_choices)
        ]

    def choice(self, delta: ChoiceDelta) -> dict:
        """The choice of `delta`'s chunk."""
        return {
            "index": delta.index,
            "delta": {"content": delta.text} if delta.text else {},
            "logprobs": self._logprobs(delta.logprobs),
            "finish_reason": delta.finish_reason,
        }

    def usage_chunk(self) -> dict:
        chunk = self.chunks.chunk([])
        chunk["usage"] = self.usage()
        return chunk

    def values_chunk(self, index: int, values: dict) -> bytes | None:
        """A streamed choice's chunk JSON from its response's values, as `add` then `choice` of its delta
        would make it, with no delta in between; None (nothing done) where logprobs take the delta's path."""
        if self._has_logprobs or values.get("logprobs", "[]") != "[]":
            return None
        self._count(index, values)
        text = values["text_output"]
        reason = values["finish_reason"] or None
        delta = {"content": text} if text else {}
        return self.chunks.encode({"index": index, "delta": delta, "logprobs": None, "finish_reason": reason})
