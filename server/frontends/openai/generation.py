"""Running OpenAI choices as requests to an LLM model through the dataplane.

Each choice is one streamed request: input `text_input` or `chat_messages`, and the sampling
fields and `stream` as request parameters (JSON values, as Triton's generate endpoint passes
them), which the LLM backend checks once; choices run concurrently and their deltas are merged
in arrival order. The first item of every choice is awaited before anything is sent,
so a request the model refuses is answered with a plain error and status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from modelgate.core.errors import NotFoundError
from modelgate.core.inference_types import InferRequest, InferTensor
from modelgate.core.response_stream import ResponseStream
from modelgate.server.dataplane import Dataplane


@dataclass
class ChoiceDelta:
    index: int
    text: str
    finish_reason: str | None
    num_prompt_tokens: int
    num_output_tokens: int
    logprobs: list[dict] = field(default_factory=list)  # entries of the backend's `logprobs` output
    error: str | None = None


def check_llm_model(dataplane: Dataplane, model: str) -> None:
    """NotFoundError unless `model` is a ready model of the llm backend."""
    if model not in llm_model_names(dataplane):
        raise NotFoundError(f"The model `{model}` does not exist or is not a ready LLM model.")


def llm_model_names(dataplane: Dataplane) -> list[str]:
    return sorted({v.name for v in dataplane.manager.all_serving() if v.config.backend == "llm"})


async def start_choices(
    dataplane: Dataplane, model: str, prompt_input: tuple[str, str], sampling: dict, indexes: list[int]
) -> list[tuple[int, ResponseStream, ChoiceDelta]]:
    """Start one request per choice index; raises the first refusal (cancelling the others)."""
    started = []
    waiting_first = None  # the stream whose first delta is awaited
    try:
        for index in indexes:
            fields = dict(sampling)
            if "seed" in fields and len(indexes) > 1:
                fields["seed"] += index  # distinct but reproducible choices
            waiting_first = await dataplane.infer_stream(_request(model, prompt_input, fields))
            first = await _first_delta(waiting_first, index)
            started.append((index, waiting_first, first))
            waiting_first = None
    except BaseException:  # a refusal, or the client went away (CancelledError): no choice runs on
        for stream in [stream for _, stream, _ in started] + [waiting_first] * (waiting_first is not None):
            stream.cancel()
        raise
    return started


async def start_prompts(
    dataplane: Dataplane, model: str, prompt_inputs: list[tuple[str, str]], sampling: dict, n: int
) -> list[tuple[int, ResponseStream, ChoiceDelta]]:
    """`n` choices of each prompt, indexed prompt by prompt; raises the first refusal.

    Whatever ends the starting (a later prompt refused, the client gone) cancels the choices of the prompts
    started before it: nobody would read them, and each would run to its last token.
    """
    started: list[tuple[int, ResponseStream, ChoiceDelta]] = []
    try:
        for number, prompt_input in enumerate(prompt_inputs):
            indexes = list(range(number * n, (number + 1) * n))
            started += await start_choices(dataplane, model, prompt_input, sampling, indexes)
    except BaseException:
        for _, stream, _ in started:
            stream.cancel()
        raise
    return started


async def merged_deltas(
    started: list[tuple[int, ResponseStream, ChoiceDelta]],
    write_now: Callable[[ChoiceDelta], bool] | None = None,
    write_values_now: Callable[[int, dict], bool] | None = None,
) -> AsyncIterator[ChoiceDelta]:
    """Every choice's deltas (the awaited first ones included) until all finished.

    With one choice and `write_now`, its later deltas are offered to `write_now` as they arrive (see
    ResponseStream.write_through) and only those it did not take are yielded. `write_values_now(index, values)`,
    if given, stands for `write_now` of the delta of a response holding `values` (ResponseStream's
    write_values_through: the LLM backend's tokens); without it such deltas go to `write_now`.
    """
    if len(started) == 1 and write_now is not None:
        async for delta in _one_choice(*started[0], write_now, write_values_now):
            yield delta
        return
    queue: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(_pump(stream, first, index, queue)) for index, stream, first in started]
    remaining = len(tasks)
    try:
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
                continue
            yield item
    finally:
        for task in tasks:
            task.cancel()
        for _, stream, _ in started:
            stream.cancel()


async def _one_choice(
    index: int, stream: ResponseStream, first: ChoiceDelta, write_now, write_values_now
) -> AsyncIterator[ChoiceDelta]:
    yield first
    if first.finish_reason is not None or first.error is not None:
        return
    stream.write_through(lambda item: item.response is not None and write_now(_delta(item.response, index)))
    if write_values_now is None:
        stream.write_values_through(lambda values: write_now(values_delta(values, index)))
    else:
        stream.write_values_through(partial(write_values_now, index))
    async for item in stream:
        if item.response is not None:
            yield _delta(item.response, index)


async def _pump(stream: ResponseStream, first: ChoiceDelta, index: int, queue: asyncio.Queue) -> None:
    try:
        await queue.put(first)
        if first.finish_reason is None and first.error is None:
            async for item in stream:
                if item.response is not None:
                    await queue.put(_delta(item.response, index))
    finally:
        queue.put_nowait(None)


async def _first_delta(stream: ResponseStream, index: int) -> ChoiceDelta:
    async for item in stream:
        if item.response is None:
            continue
        if item.response.error is not None:
            raise item.response.error
        return _delta(item.response, index)
    return ChoiceDelta(index, "", "stop", 0, 0)


def _delta(response, index: int) -> ChoiceDelta:
    if response.error is not None:
        return ChoiceDelta(index, "", "error", 0, 0, error=response.error.message)
    return values_delta(response.values, index)  # the llm backend answers the OpenAI routes with values


def values_delta(values: dict, index: int) -> ChoiceDelta:
    """The delta of a response holding `values` (the LLM backend's outputs) for choice `index`."""
    text = values["text_output"]
    reason = values["finish_reason"] or None
    raw_logprobs = values.get("logprobs", "[]")
    logprobs = json.loads(raw_logprobs) if raw_logprobs != "[]" else []  # none asked for: no parse per token
    return ChoiceDelta(index, text, reason, int(values["num_input_tokens"]), int(values["num_output_tokens"]), logprobs)


def _request(model: str, prompt_input: tuple[str, str | list[int]], sampling: dict) -> InferRequest:
    """The LLM backend's request for one choice; `prompt_input`: (input name, its text, or for `input_ids` the
    prompt's token ids)."""
    name, prompt = prompt_input
    tensor = _bytes_tensor(name, prompt) if isinstance(prompt, str) else _ids_tensor(name, prompt)
    return InferRequest(
        model_name=model,
        parameters={**sampling, "stream": True},
        inputs={name: tensor},
        can_take_output_values=True,
    )


def _ids_tensor(name: str, token_ids: list[int]) -> InferTensor:
    """INT32 ids (the request schema keeps them within INT32)."""
    return InferTensor(name, "INT32", (len(token_ids),), np.array(token_ids, dtype=np.int32))


def _bytes_tensor(name: str, text: str) -> InferTensor:
    return InferTensor(name, "BYTES", (1,), np.array([text.encode("utf-8")], dtype=object))
