"""The server's Python CPU per streamed token, from an engine step's bytes to the socket's buffer, without noise.

What `llm_server_cpu_per_token.py` measures end to end mixes in the kernel's socket writes, the requests' own
handling and whatever else the machine runs. This runs only the per-token path, in one process and on a uvloop
loop: `num_streams` streamed requests of the LLM backend, each written through (as a server writes them) to an
event writer whose transport keeps the bytes and makes no system call; engine steps of one token per request
are decoded and handed to the backend as its reader thread would hand them to the loop. It prints this thread's
CPU per token (the best of 8 rounds) and a digest of the bytes written, which must not change when the path is
made faster. With --cold-caches the caches are emptied before each step (outside the timed part), as a server
meets them; the figure is then 2-3x higher, close to what the server spends per token on this path.

With `--protocol grpc` each stream is a ModelStreamInfer call served on the loop (loop_stream.StreamCall) whose
grpc core is a stand-in: it keeps each send's bytes and completes the send after the step (outside the timed
part), as grpc's polling thread would; the CPU of those completions (`_on_sent`, the polling thread's Python per
token) is printed beside the loop's. grpc core's own work is not in either figure.

It builds the backend's instance around its internals (no engine process): a change to them fails it loudly.

    python benchmarks/llm_stream_delivery_cpu.py [--protocol generate_stream|openai-completions|openai-chat|grpc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import threading
import time
import types

import numpy as np
import uvloop
from aiohttp.http import HttpVersion11

from modelgate.backends.llm import llm_metrics
from modelgate.backends.llm.active_request import ActiveRequest
from modelgate.backends.llm.backend import OUTPUT_NAMES, LLMModelInstance
from modelgate.backends.llm.engine_messages import EncodedStep, EngineStats, RequestOutput, StepOutputs, encode
from modelgate.backends.llm.generation_request import GenerationRequest
from modelgate.core.inference_types import InferRequest, InferResponse
from modelgate.core.response_stream import ResponseStream, StreamItem
from modelgate.server.frontends.grpc import grpc_internals as grpc_internals
from modelgate.server.frontends.grpc.infer_stream_outputs import WriterOutput
from modelgate.server.frontends.grpc.loop_stream import StreamCall
from modelgate.server.frontends.grpc.stream_infer import _MessageEncoder
from modelgate.server.frontends.http import app as http_app
from modelgate.server.frontends.http.event_writer import EventWriter
from modelgate.server.frontends.openai import generation, routes, schemas

ROUNDS = 8
EVICT_BYTES = 64 << 20  # read between steps with --cold-caches: more than this VM's caches hold


class Transport:
    """Keeps a digest of what is written; its buffer is always empty (a client that keeps up)."""

    def __init__(self):
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.digest.update(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def _instance(loop: asyncio.AbstractEventLoop) -> LLMModelInstance:
    instance = object.__new__(LLMModelInstance)
    instance.spec = types.SimpleNamespace(model_name="tiny_llm", model_version=1, event_loop=loop)
    instance.labels = ("tiny_llm", "1")
    instance._version = "1"
    instance.trace = None
    instance.tokenizer = None
    instance._active = {}
    instance._lock = threading.Lock()
    instance.series = llm_metrics.VersionSeries(instance.labels)
    instance._records_engine_stats = True
    return instance


def _writer(transport: Transport) -> EventWriter:
    writer = EventWriter(types.SimpleNamespace(version=HttpVersion11))
    writer._transport, writer._has_written = transport, True  # as after start() and the first event
    return writer


@contextlib.contextmanager
def sends_keep_bytes():
    """While it lasts, a send's operation is its message's bytes (grpc_internals.SendMessage), for `_GrpcCore`."""
    real = grpc_internals.SendMessage
    grpc_internals.SendMessage = lambda message, flags: message
    try:
        yield
    finally:
        grpc_internals.SendMessage = real


class _GrpcCore:
    """A call's grpc core: keeps each send's bytes (under `sends_keep_bytes`) and its completion tag, run by
    `complete` as grpc's polling thread would run it."""

    def __init__(self, transport: Transport):
        self.transport = transport
        self.pending: list = []

    def start_server_batch(self, operations, tag) -> int:
        self.transport.write(operations[-1])
        self.pending.append(tag)
        return 0

    def complete(self) -> None:
        pending, self.pending = self.pending, []
        for tag in pending:
            tag(None)


def grpc_write_through(loop, stream: ResponseStream, request: InferRequest, transport: Transport) -> _GrpcCore:
    """What ModelStreamInfer's session (stream_infer.py) registers for a request, on a call served on the loop."""
    core = _GrpcCore(transport)
    state = types.SimpleNamespace(
        condition=threading.Condition(), client=grpc_internals.CLIENT_OPEN, statused=False, due=set(),
        initial_metadata_allowed=False, disable_next_compression=False, callbacks=[],
    )  # fmt: skip
    call = StreamCall(loop, types.SimpleNamespace(call=core), state, behaviour=None)
    dataplane = types.SimpleNamespace(model_metadata=lambda name, version: {"outputs": _GRPC_OUTPUTS})
    messages = _MessageEncoder(dataplane, request, as_bytes=True)
    output = WriterOutput(call)
    stream.write_through(lambda item: output.put_now(messages.encode(item)))
    stream.write_values_through(output.values_writer(messages))
    first = {"text_output": "hi", "finish_reason": "", "num_input_tokens": 32, "num_output_tokens": 1}
    output.put(messages.encode(StreamItem(InferResponse("tiny_llm", "1", values={**first, "logprobs": "[]"}), False)))
    core.complete()
    return core


_GRPC_OUTPUTS = [{"name": name, "datatype": "INT32" if "num_" in name else "BYTES"} for name in OUTPUT_NAMES]


def _write_through(protocol: str, stream: ResponseStream, writer: EventWriter) -> None:
    """What the protocol's handler registers once its first event is out."""
    if protocol == "generate_stream":
        events = http_app.GenerateEventEncoder()
        stream.write_through(lambda item: http_app._write_now(writer, events, item))
        events.encode(InferResponse("tiny_llm", "1", values={}))  # the first event, written before the others
        stream.write_values_through(writer.object_writer(events.head, http_app.HEAD_KEYS))
        return
    chat = protocol == "openai-chat"
    fields = {"messages": [{"role": "user", "content": "hi"}]} if chat else {"prompt": "hi"}
    schema = schemas.ChatCompletionRequest if chat else schemas.CompletionRequest
    body = schema.model_validate({"model": "tiny_llm", "stream": True, "max_tokens": 96, **fields})
    encoder = routes._ChatEncoder(body) if chat else routes._CompletionEncoder(body, ["hi"])
    encoder.chunks = routes.ChunkEnvelope(encoder.chunks.object_type, "cmpl-0", "tiny_llm")
    encoder.chunks._head = encoder.chunks._head.replace(str(encoder.chunks.created).encode(), b"0")  # same digest

    def write_now(delta) -> bool:
        if not writer.can_write_now():
            return False
        encoder.add(delta)
        writer.write_event_now(routes._chunk_json(encoder, delta))
        return True

    def write_values_now(values: dict) -> bool:
        if not writer.can_write_now():
            return False
        chunk = encoder.values_chunk(0, values)
        if chunk is None:
            return write_now(generation.values_delta(values, 0))
        writer.write_event_now(chunk)
        return True

    encoder.choice(generation.ChoiceDelta(0, "", None, 0, 0))  # the first delta, written before the others
    stream.write_through(lambda item: item.response is not None and write_now(generation._delta(item.response, 0)))
    stream.write_values_through(write_values_now)


async def _run(protocol: str, num_streams: int, num_steps: int, cold: bool) -> tuple[float, str]:
    evict = np.ones(EVICT_BYTES // 8) if cold else None
    loop = asyncio.get_running_loop()
    instance = _instance(loop)
    transports, readers, cores = [], [], []
    for number in range(num_streams):
        stream = ResponseStream(loop)
        request = InferRequest("tiny_llm", can_take_output_values=True, response_stream=stream)
        generation_request = GenerationRequest(None, "hi", True, False)
        instance._active[f"r{number}"] = ActiveRequest(
            stream, request, generation_request, list(OUTPUT_NAMES), True, True
        )
        transports.append(Transport())
        if protocol == "grpc":
            cores.append(grpc_write_through(loop, stream, request, transports[-1]))
        else:
            _write_through(protocol, stream, _writer(transports[-1]))
        readers.append(asyncio.create_task(_read(stream)))
    await asyncio.sleep(0)  # every reader waits: items are written through
    stats = EngineStats(num_streams, 0, 0.5, 0, 0, 0)
    steps = [
        encode(
            StepOutputs(
                [RequestOutput(f"r{n}", [1234], " word", False, None, 32, step + 1, 0) for n in range(num_streams)],
                stats,
            )
        )
        for step in range(num_steps)
    ]
    per_round, best, best_completions = num_steps // ROUNDS, float("inf"), float("inf")
    for first in range(0, per_round * ROUNDS, per_round):
        spent = completions = 0.0
        for data in steps[first : first + per_round]:
            if evict is not None:
                evict.sum()  # outside the timed part: the caches as the engine and the kernel leave them
            started = time.thread_time()
            instance._on_outputs(EncodedStep(data))
            spent += time.thread_time() - started
            started = time.thread_time()
            for core in cores:
                core.complete()
            completions += time.thread_time() - started
        best, best_completions = min(best, spent), min(best_completions, completions)
    for reader in readers:
        reader.cancel()
    digest = hashlib.sha256(b"".join(transport.digest.digest() for transport in transports)).hexdigest()
    num_tokens = per_round * num_streams
    return best / num_tokens * 1e6, best_completions / num_tokens * 1e6, digest[:16]


async def _read(stream: ResponseStream) -> None:
    async for _ in stream:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="generate_stream,openai-completions,openai-chat,grpc")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument(
        "--cold-caches",
        action="store_true",
        help="evict the CPU caches before each step, as a server meets them: between two engine steps the engine, "
        "the kernel's socket writes and the clients run; what the path touches per token then costs cache misses",
    )
    args = parser.parse_args()
    caches = ", caches cold at each step" if args.cold_caches else ""
    print(f"{args.streams} streams, one token each per step, {args.steps} steps{caches}\n")
    print("| protocol | Python CPU per token (µs) | send completions (µs) | digest of the bytes written |")
    print("| --- | --- | --- | --- |")
    for protocol in args.protocol.split(","):
        with sends_keep_bytes():
            cpu_us, completions_us, digest = uvloop.run(_run(protocol, args.streams, args.steps, args.cold_caches))
        completions = f"{completions_us:.2f}" if protocol == "grpc" else ""
        print(f"| {protocol} | {cpu_us:.2f} | {completions} | {digest} |")


if __name__ == "__main__":
    main()
