"""The hostile requests of issue 16, each with the outcome the server documents for it.

Through the client its users have where that client sends the request (the openai package, tritonclient),
raw HTTP or a raw gRPC channel where a client would refuse to (nesting 100k deep, a body over the limit,
bytes that are no protobuf message). `send(target)` returns the outcome seen, in the words of `expected`: an
HTTP status ("400"), a gRPC code ("INVALID_ARGUMENT"), or a sentence for what has no status. A failure on the
client's side (a reset, a timeout) is an outcome too, named by its exception, and never the expected one.
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import openai
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from benchmarks.soak_good_requests import llm_inputs, openai_client
from benchmarks.soak_target import WAIT_S, Target
from modelgate.server.frontends.openai.schemas import MAX_PROMPTS

HUGE_PROMPT = "a" * 10_000_000
DEEP = 100_000  # levels of JSON nesting: Python's json recursed into a RecursionError (a 500) once
ABANDON_AFTER_S = 0.5  # how long the client of a large request waits before it leaves
PROMPT_REFUSED = "stream error: prompt refused before tokenizing"
CLIENT_LEFT = "client left, nothing answered"


@dataclass(frozen=True)
class HostileRequest:
    name: str
    expected: str
    send: Callable[[Target], str]


def _sdk_status(call: Callable[[], object]) -> str:
    try:
        call()
    except openai.APIStatusError as exc:
        return str(exc.status_code)
    return "200"


def _completion(**fields) -> Callable[[Target], str]:
    def send(target: Target) -> str:
        with openai_client(target) as client:
            return _sdk_status(lambda: client.completions.create(model=target.llm_model, **fields))

    return send


def _post(target: Target, path: str, body: str) -> str:
    host, port = target.http_url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=WAIT_S)
    try:
        connection.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return str(response.status)
    finally:
        connection.close()


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def deep_json_infer(target: Target) -> str:
    return _post(target, "/v2/models/add_sub/infer", '{"inputs": ' + _deep(DEEP - 1) + "}")


def deep_json_chat(target: Target) -> str:
    body = '{"model": ' + json.dumps(target.llm_model) + ', "messages": ' + _deep(DEEP - 1) + "}"
    return _post(target, "/v1/chat/completions", body)


def huge_generate(target: Target) -> str:
    return _post(target, f"/v2/models/{target.llm_model}/generate", json.dumps({"text_input": HUGE_PROMPT}))


def abandoned_prompts(target: Target) -> str:
    """MAX_PROMPTS prompts of a long generation, not streamed; the client leaves before any answer can come.

    Only the closed connection tells the server: it must cancel every prompt's generation.
    """
    body = {"model": target.llm_model, "prompt": ["a"] * MAX_PROMPTS, "max_tokens": 128, "ignore_eos": True}
    with _raw_request(target, "/v1/completions", json.dumps(body).encode()) as connection:
        connection.settimeout(ABANDON_AFTER_S)
        try:
            return _status_line(connection.recv(4096))  # an answer this soon is not the one documented
        except TimeoutError:
            return CLIENT_LEFT


def body_over_limit_declared(target: Target) -> str:
    """Headers declaring one byte over --http-max-input-size: refused before the body is sent."""
    host, port = target.http_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as connection:
        connection.sendall(_headers("/v2/models/add_sub/infer", f"Content-Length: {target.max_input_size + 1}"))
        return _status_line(connection.recv(4096))


def body_over_limit_chunked(target: Target) -> str:
    """A chunked body (no length declared) sent until 1 MiB past --http-max-input-size: the server counts."""
    host, port = target.http_url.rsplit(":", 1)
    chunk_size = 1 << 20
    chunk = b"%x\r\n" % chunk_size + b"[" * chunk_size + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as connection:
        try:
            connection.sendall(_headers("/v2/models/add_sub/infer", "Transfer-Encoding: chunked"))
            for _ in range(target.max_input_size // chunk_size + 2):
                connection.sendall(chunk)
            connection.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # refused while sending: the answer is read below
        return _status_line(connection.recv(4096))


def undecodable_grpc(target: Target) -> str:
    """Bytes that are no ModelInferRequest (a string field running past the end), through a raw channel."""
    with grpc.insecure_channel(target.grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # no serializer: bytes as they are
        try:
            call(b"\x0a\xff\x01abc", timeout=WAIT_S)
        except grpc.RpcError as exc:
            return exc.code().name
    return "OK"


def huge_grpc_stream_prompt(target: Target) -> str:
    """A 10 MB prompt on a tritonclient.grpc stream: an error comes back on the stream, which stays open."""
    client = grpcclient.InferenceServerClient(target.grpc_url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put(error))
    try:
        client.async_stream_infer(target.llm_model, llm_inputs(HUGE_PROMPT, "{}"), request_id="huge")
        error = answers.get(timeout=WAIT_S)
    finally:
        # Half-closed, not cancelled: tritonclient's cancel leaves its request thread blocked for good, and
        # with it this 10 MB request (the soak's own memory would grow by that much each time).
        client.stop_stream(cancel_requests=False)
        client.close()
    return _refusal(error.message() if error is not None else "")


def huge_grpc_stream_prompt_left(target: Target) -> str:
    """The same on a raw ModelStreamInfer call that the client cancels once the error is in: it leaves without
    half-closing, as a client that gives up does (raw grpc, because of tritonclient's cancel above)."""
    left = threading.Event()

    def requests():
        yield _llm_request(target.llm_model, HUGE_PROMPT)
        left.wait(WAIT_S)  # never half-closes

    with grpc.insecure_channel(target.grpc_url) as channel:
        call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests(), timeout=WAIT_S)
        try:
            first = next(call)
        finally:
            call.cancel()
            left.set()
    return _refusal(first.error_message)


def _llm_request(model: str, prompt: str) -> service_pb2.ModelInferRequest:
    """An LLM request as tritonclient would send it: text_input, one BYTES element (length-prefixed)."""
    request = service_pb2.ModelInferRequest(model_name=model, id="huge")
    request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    encoded = prompt.encode()
    request.raw_input_contents.append(struct.pack("<I", len(encoded)) + encoded)
    return request


def _refusal(message: str) -> str:
    if not message:
        return "answered"
    return PROMPT_REFUSED if "refused before tokenizing" in message else f"stream error: {message[:60]}"


def _raw_request(target: Target, path: str, body: bytes) -> socket.socket:
    host, port = target.http_url.rsplit(":", 1)
    connection = socket.create_connection((host, int(port)), timeout=WAIT_S)
    connection.sendall(_headers(path, f"Content-Length: {len(body)}") + body)
    return connection


def _headers(path: str, length_header: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: soak", "Content-Type: application/json", length_header, "", ""]
    return "\r\n".join(lines).encode()


def _status_line(reply: bytes) -> str:
    """The status of a raw HTTP reply ("413"), or what came instead."""
    parts = reply.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return f"no HTTP reply: {reply[:40]!r}"
    return parts[1].decode()


# The 10 MB prompts one by one: the memory test sends each 20 times (tests/server/test_request_memory.py).
HUGE_PROMPTS = [
    HostileRequest("10 MB prompt, /v1/completions", "400", _completion(prompt=HUGE_PROMPT, max_tokens=2)),
    HostileRequest("10 MB prompt, /generate", "400", huge_generate),
    HostileRequest("10 MB prompt, gRPC stream", PROMPT_REFUSED, huge_grpc_stream_prompt),
    HostileRequest("10 MB prompt, gRPC, client leaves", PROMPT_REFUSED, huge_grpc_stream_prompt_left),
]

HOSTILE_REQUESTS = HUGE_PROMPTS + [
    HostileRequest("100k-deep JSON, /infer", "400", deep_json_infer),
    HostileRequest("100k-deep JSON, /v1/chat", "400", deep_json_chat),
    HostileRequest("10^5 stop strings", "400", _completion(prompt="hi", max_tokens=2, stop=["x"] * 100_000)),
    HostileRequest("best_of = 10^6", "400", _completion(prompt="hi", max_tokens=2, best_of=10**6)),
    HostileRequest("2000 prompts", "400", _completion(prompt=["a"] * 2000, max_tokens=2)),
    HostileRequest(f"{MAX_PROMPTS} prompts, client leaves", CLIENT_LEFT, abandoned_prompts),
    HostileRequest("body over limit (declared)", "413", body_over_limit_declared),
    HostileRequest("body over limit (chunked)", "413", body_over_limit_chunked),
    HostileRequest("undecodable gRPC message", "INVALID_ARGUMENT", undecodable_grpc),
]
