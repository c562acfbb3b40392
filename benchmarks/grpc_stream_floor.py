"""What grpcio itself costs a server per streamed message: bare servers streaming one prebuilt token message.

The floor under `llm_server_cpu_per_token.py --protocols grpc`. Each server here answers ModelStreamInfer with
`--osl` copies of the same bytes an LLM token's message has on the wire (value_responses.py builds them), paced
as the engine paces tokens: every `--step-ms`, one message to each open stream (the engine's step). There is no
engine, no dataplane, no encoding: what is left is the transport. Transports:

- `loop`: the one modelgate serves with (grpcio's threaded server, each call served on the event loop with no
  handler thread: loop_calls.py / loop_stream.py), messages queued with `try_write_serialized`;
- `aio`: grpc.aio, each stream's handler awaiting the step and then `context.write` of the bytes.

The server runs in this process; a client process (grpc.aio, bytes not decoded) holds `--concurrency` streams
at once over `--num-requests` requests. The figure is this process's CPU (every thread) per message sent.

    python benchmarks/grpc_stream_floor.py [--transports loop,aio] [--concurrency 64] [--osl 96]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import grpc
from tritonclient.grpc import service_pb2

from modelgate.core.inference_types import InferResponse
from modelgate.server.frontends.grpc.loop_calls import LoopCalls
from modelgate.server.frontends.grpc.server import MAX_HANDLER_THREADS, batch_scheduling, server_options
from modelgate.server.frontends.grpc.value_responses import ValueResponseEncoder

METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
SERVICE = "inference.GRPCInferenceService"
OUTPUTS = {
    "text_output": "BYTES",
    "finish_reason": "BYTES",
    "num_input_tokens": "INT32",
    "num_output_tokens": "INT32",
    "logprobs": "BYTES",
}


def token_message() -> bytes:
    """A tiny_llm token's ModelStreamInfer message as the server writes it (ValueResponseEncoder.serialize)."""
    values = {"text_output": " word", "finish_reason": "", "num_input_tokens": 32, "num_output_tokens": 7}
    values["logprobs"] = "[]"
    encoder = ValueResponseEncoder(OUTPUTS)
    encoder.encode(InferResponse("tiny_llm", "1", id="", values=values), False)  # builds the template
    return encoder.serialize(values)


class Steps:
    """The engine's stand-in: every `step_s`, one message to each open stream; a stream ends after `osl`."""

    def __init__(self, message: bytes, osl: int, step_s: float):
        self.message, self.osl, self.step_s = message, osl, step_s
        self.streams: dict[object, list] = {}  # write -> [messages sent, future of the end]
        self.sent = 0
        self.write_cpu = 0.0  # the loop thread's CPU in the steps' writes

    def open(self, write) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        self.streams[write] = [0, done]
        return done

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.step_s)
            started = time.thread_time()
            for write, stream in list(self.streams.items()):
                write(self.message)
                stream[0] += 1
                if stream[0] == self.osl:
                    del self.streams[write]
                    stream[1].set_result(None)
                self.sent += 1
            self.write_cpu += time.thread_time() - started


async def serve_loop(steps: Steps) -> tuple[grpc.Server, int]:
    pool = ThreadPoolExecutor(MAX_HANDLER_THREADS, initializer=batch_scheduling)
    server = grpc.server(pool, options=server_options(1 << 20, False), maximum_concurrent_rpcs=None)
    calls = LoopCalls(asyncio.get_running_loop(), pool)

    async def stream(requests, context):
        async for _ in requests:  # one request per stream
            writer = context.response_writer
            await steps.open(writer.try_write_serialized)
            return
        yield  # an async generator, as loop_stream.py wants

    def threaded(requests, context):
        raise NotImplementedError("every call runs on the loop")

    handler = calls.stream_handler(threaded, stream, bytes, bytes)
    method = grpc.stream_stream_rpc_method_handler(handler)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ModelStreamInfer": method}),))
    port = server.add_insecure_port("127.0.0.1:0")
    before = set(threading.enumerate())
    server.start()
    for thread in set(threading.enumerate()) - before:  # grpc's polling thread, as the server sets it
        batch_scheduling(thread.native_id)
    return server, port


async def serve_aio(steps: Steps) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=server_options(1 << 20, False), maximum_concurrent_rpcs=None)

    async def stream(requests, context):
        async for _ in requests:
            written: asyncio.Queue = asyncio.Queue()
            done = steps.open(written.put_nowait)
            while not done.done() or not written.empty():
                await context.write(await written.get())
            return

    method = grpc.stream_stream_rpc_method_handler(stream)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ModelStreamInfer": method}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def client(port: int, concurrency: int, num_requests: int) -> None:
    request = service_pb2.ModelInferRequest(model_name="tiny_llm").SerializeToString()
    remaining = iter(range(num_requests))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call_stream = channel.stream_stream(METHOD)

        async def worker() -> None:
            for _ in remaining:
                async for _ in call_stream(iter([request])):
                    pass

        await asyncio.gather(*(worker() for _ in range(concurrency)))


class Floor(NamedTuple):
    per_message_us: float  # this process's CPU (every thread) per message sent
    writes_us: float  # of which the loop thread's, in the steps' writes
    num_messages: int


def floor(
    transport: str, concurrency: int = 64, num_requests: int = 256, osl: int = 96, step_ms: float = 10.0
) -> Floor:
    """The floor of one transport ("loop" or "aio"), measured now."""
    args = argparse.Namespace(concurrency=concurrency, num_requests=num_requests, osl=osl, step_ms=step_ms)
    return run_uvloop(measure(transport, args))


async def measure(transport: str, args) -> Floor:
    steps = Steps(token_message(), args.osl, args.step_ms / 1000)
    server, port = await (serve_loop(steps) if transport == "loop" else serve_aio(steps))
    stepping = asyncio.create_task(steps.run())
    command = [sys.executable, __file__, "--client", str(port), "--concurrency", str(args.concurrency)]
    command += ["--num-requests", str(args.num_requests)]
    cpu = time.process_time()
    process = await asyncio.create_subprocess_exec(*command)
    await process.wait()
    cpu = time.process_time() - cpu
    stepping.cancel()
    stopped = server.stop(None)
    await stopped if transport == "aio" else stopped.wait()
    return Floor(cpu / steps.sent * 1e6, steps.write_cpu / steps.sent * 1e6, steps.sent)


def run_uvloop(coroutine):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transports", default="loop,aio")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--osl", type=int, default=96)
    parser.add_argument("--step-ms", type=float, default=10.0, help="the engine step: tiny_llm at 64 streams")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)  # the client process: the server's port
    args = parser.parse_args()
    if args.client is not None:
        run_uvloop(client(args.client, args.concurrency, args.num_requests))
        return
    print(f"{args.concurrency} streams, {args.osl} messages each, one per stream every {args.step_ms:g} ms")
    print(f"message: {len(token_message())} bytes (a tiny_llm token's)\n")
    print("| transport | messages | server CPU per message (µs) | of which the loop's writes (µs) |")
    print("| --- | --- | --- | --- |")
    for transport in args.transports.split(","):
        measured = floor(transport, args.concurrency, args.num_requests, args.osl, args.step_ms)
        print(f"| {transport} | {measured.num_messages:,} | {measured.per_message_us:.1f} | {measured.writes_us:.1f} |")


if __name__ == "__main__":
    main()
