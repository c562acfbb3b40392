"""The protocol between the LLM backend (server process) and its engine process: the messages and their codec.

To the engine: AddRequest, AbortRequest, Shutdown. From it: EngineReady or EngineFailed once, then one
StepOutputs per step that produced outputs, which the server's reader thread hands on still encoded
(EncodedStep, receive_from_engine_lazily). Messages are msgspec Structs in MessagePack, decoded into the same
types on the other side, fields by position (array_like: names are never sent). benchmarks/engine_messages.py
measured this as the fastest of dataclasses with pickle or msgpack, Structs as maps in msgpack or JSON, and the
old JSON dicts. Never pickle: the contents of a request come from the network.

A request is checked once, in the server process, before it becomes an AddRequest (generation_request.py);
decoding here only rebuilds the types, which holds because only our own processes write to these pipes.
"""

from __future__ import annotations

from multiprocessing.connection import Connection

import msgspec

from modelgate.backends.llm.sampling_params import SamplingParams

__all__ = [
    "AbortRequest",
    "AddRequest",
    "EngineFailed",
    "EngineReady",
    "EncodedStep",
    "EngineStats",
    "FromEngine",
    "RequestOutput",
    "SamplingParams",
    "Shutdown",
    "StepOutputs",
    "ToEngine",
    "decode_from_engine",
    "decode_to_engine",
    "encode",
    "receive_from_engine",
    "receive_from_engine_lazily",
    "receive_to_engine",
    "send",
]


class _Message(msgspec.Struct, array_like=True):
    """Encoded as an array of its fields in order: both ends always run the same code."""


class AddRequest(_Message, tag="add"):
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams


class AbortRequest(_Message, tag="abort"):
    request_id: str


class Shutdown(_Message, tag="shutdown"):
    pass


class EngineReady(_Message, tag="ready"):
    num_kv_blocks: int
    max_model_len: int
    eos_token_ids: tuple[int, ...]


class EngineFailed(_Message, tag="failed"):
    message: str  # why the engine could not start


class EngineStats(_Message):
    """Gauges and counters for metrics, read after a step."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float
    num_preemptions: int  # cumulative
    prefix_cache_queries: int  # cumulative prompt tokens looked up
    prefix_cache_hits: int
    num_steps: int = 0  # cumulative, as the three below (engine.StepCounts)
    num_decode_steps: int = 0  # steps of one new token per request
    num_steps_launched_ahead: int = 0  # decode steps queued before the previous step's tokens reached the host
    # Cumulative time and tokens of the decode steps and of the steps with prompt tokens (StepCounts.finished).
    decode_step_seconds: float = 0.0
    decode_step_tokens: int = 0
    prefill_step_seconds: float = 0.0
    prefill_step_tokens: int = 0


class RequestOutput(_Message):
    """What one step did for one request: its new tokens and text since the last output."""

    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    finish_reason: str | None  # "stop", "length" or "abort" once finished
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    logprobs: list[dict[int, float]] = []  # one dict per new token: token id -> logprob
    queue_time_s: float | None = None  # on a request's first output: arrival to first schedule
    # On the output with a request's first token: the engine's own time to first token, from the request's
    # arrival in the engine process to this output (the server's trace sets it beside its own, trace_recorder.py).
    engine_ttft_s: float | None = None


class StepOutputs(_Message, tag="outputs"):
    outputs: list[RequestOutput]
    stats: EngineStats


class EncodedStep:
    """A StepOutputs as the engine sent it, decoded where its outputs are used (`decode`).

    The server's reader thread only receives steps; the event loop decodes and delivers them. Decoded on the
    reader, every object of a step was made in that thread's core and read from the loop's, a cache miss each:
    2-3 µs of server CPU per streamed token on the 2-core VM (issue 18), against well under one decoded where
    the outputs are read at once.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def decode(self) -> StepOutputs:
        return _step_outputs.decode(self.data)


ToEngine = AddRequest | AbortRequest | Shutdown
FromEngine = EngineReady | EngineFailed | StepOutputs

_encoder = msgspec.msgpack.Encoder()
_to_engine = msgspec.msgpack.Decoder(ToEngine)
_from_engine = msgspec.msgpack.Decoder(FromEngine)
_step_outputs = msgspec.msgpack.Decoder(StepOutputs)
# Every encoded StepOutputs starts so, whatever its fields hold: an array (array_like) of its tag and its two
# fields, a fixarray header, then the tag; no other message does.
_STEP_PREFIX = bytes([0x90 | (1 + len(StepOutputs.__struct_fields__))]) + _encoder.encode(
    StepOutputs.__struct_config__.tag
)


def encode(message: ToEngine | FromEngine) -> bytes:
    return _encoder.encode(message)


def decode_to_engine(data: bytes) -> ToEngine:
    return _to_engine.decode(data)


def decode_from_engine(data: bytes) -> FromEngine:
    return _from_engine.decode(data)


def send(connection: Connection, message: ToEngine | FromEngine) -> None:
    """Callers that share a connection across threads hold a lock around this."""
    connection.send_bytes(_encoder.encode(message))


def receive_to_engine(connection: Connection) -> ToEngine:
    return _to_engine.decode(connection.recv_bytes())


def receive_from_engine(connection: Connection) -> FromEngine:
    return _from_engine.decode(connection.recv_bytes())


def receive_from_engine_lazily(connection: Connection) -> FromEngine | EncodedStep:
    """As receive_from_engine, but a StepOutputs comes as an EncodedStep, decoded by whoever uses it."""
    data = connection.recv_bytes()
    if data.startswith(_STEP_PREFIX):
        return EncodedStep(data)
    return _from_engine.decode(data)
