"""benchmarks/llm_stream_delivery_cpu.py's gRPC protocol: the stand-in call it times gets each streamed token as
the bytes protobuf makes of the token's message, and grpc's SendMessage is put back once it is done."""

from __future__ import annotations

import asyncio

import uvloop
from tritonclient.grpc import service_pb2

from benchmarks import llm_stream_delivery_cpu as bench
from modelgate.backends.llm.backend import OUTPUT_NAMES
from modelgate.core.inference_types import InferRequest
from modelgate.core.response_stream import ResponseStream
from modelgate.server.frontends.grpc import grpc_internals


class Recording(bench.Transport):
    def __init__(self):
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.written.append(data)


def token_message(values: dict) -> bytes:
    """What protobuf makes of a tiny_llm token's ModelStreamInfer message (no id, not final)."""
    infer_response = service_pb2.ModelInferResponse(model_name="tiny_llm", model_version="1")
    for name in OUTPUT_NAMES:
        infer_response.outputs.add(name=name, datatype="INT32" if "num_" in name else "BYTES", shape=[1])
        value = values[name]
        if isinstance(value, int):
            infer_response.raw_output_contents.append(value.to_bytes(4, "little"))
        else:
            data = value.encode()
            infer_response.raw_output_contents.append(len(data).to_bytes(4, "little") + data)
    infer_response.parameters["triton_final_response"].bool_param = False
    return service_pb2.ModelStreamInferResponse(infer_response=infer_response).SerializeToString()


async def stream_tokens(values: list[dict]) -> list[bytes]:
    loop = asyncio.get_running_loop()
    stream = ResponseStream(loop)
    request = InferRequest("tiny_llm", can_take_output_values=True, response_stream=stream)
    transport = Recording()
    core = bench.grpc_write_through(loop, stream, request, transport)
    reader = asyncio.create_task(_drain(stream))
    await asyncio.sleep(0)  # the reader waits: tokens are written through
    for token in values:
        assert stream.try_write_values(token)
        core.complete()
    reader.cancel()
    return transport.written


async def _drain(stream: ResponseStream) -> None:
    async for _ in stream:
        pass


def test_the_grpc_stand_in_gets_each_token_as_protobuf_serializes_its_message():
    tokens = [
        {
            "text_output": text,
            "finish_reason": "",
            "num_input_tokens": 32,
            "num_output_tokens": number,
            "logprobs": "[]",
        }
        for number, text in enumerate([" word", " é", " a longer piece of text"], start=2)
    ]
    with bench.sends_keep_bytes():
        written = uvloop.run(stream_tokens(tokens))
    first = {"text_output": "hi", "finish_reason": "", "num_input_tokens": 32, "num_output_tokens": 1, "logprobs": "[]"}
    assert written == [token_message(values) for values in [first, *tokens]]


def test_sends_keep_bytes_puts_grpcs_send_message_back():
    real = grpc_internals.SendMessage
    with bench.sends_keep_bytes():
        assert grpc_internals.SendMessage(b"x", 0) == b"x"
    assert grpc_internals.SendMessage is real
