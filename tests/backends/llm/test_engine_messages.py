"""The engine process protocol: every message survives the pipe's codec as the same typed object."""

from __future__ import annotations

from multiprocessing import Pipe

import msgspec
import pytest

from modelgate.backends.llm.engine_messages import (
    AbortRequest,
    AddRequest,
    EncodedStep,
    EngineFailed,
    EngineReady,
    EngineStats,
    RequestOutput,
    Shutdown,
    StepOutputs,
    decode_from_engine,
    decode_to_engine,
    encode,
    receive_from_engine,
    receive_from_engine_lazily,
    receive_to_engine,
    send,
)
from modelgate.backends.llm.sampling_params import SamplingParams

SAMPLING = SamplingParams(max_tokens=7, temperature=0.5, seed=2**62, stop=["\n", "é"], stop_token_ids=[3], logprobs=2)
STATS = EngineStats(2, 1, 0.25, 3, 40, 12)
OUTPUTS = [
    RequestOutput("a", [5, 6], "hé", False, None, 4, 2, 0, [{5: -0.5, 9: -1.25}, {6: -0.0}], queue_time_s=0.003),
    RequestOutput("b", [], "", True, "abort", 3, 0, 0),
]
TO_ENGINE = [
    AddRequest("r-1", [1, 2, 3], SAMPLING),
    AddRequest("r-2", [9], SamplingParams()),
    AbortRequest("r-1"),
    Shutdown(),
]
FROM_ENGINE = [EngineReady(64, 128, (2, 7)), EngineFailed("ValueError: no config.json"), StepOutputs(OUTPUTS, STATS)]


@pytest.mark.parametrize("message", TO_ENGINE, ids=lambda m: type(m).__name__)
def test_messages_to_the_engine_decode_to_equal_objects(message):
    decoded = decode_to_engine(encode(message))
    assert type(decoded) is type(message) and decoded == message


@pytest.mark.parametrize("message", FROM_ENGINE, ids=lambda m: type(m).__name__)
def test_messages_from_the_engine_decode_to_equal_objects(message):
    decoded = decode_from_engine(encode(message))
    assert type(decoded) is type(message) and decoded == message


def test_logprobs_keep_integer_token_ids():
    step = decode_from_engine(encode(StepOutputs(OUTPUTS, STATS)))
    assert all(isinstance(token_id, int) for token_id in step.outputs[0].logprobs[0])


def test_each_direction_accepts_only_its_own_messages():
    with pytest.raises(msgspec.ValidationError):
        decode_to_engine(encode(EngineReady(1, 2, ())))
    with pytest.raises(msgspec.ValidationError):
        decode_from_engine(encode(AbortRequest("x")))


def test_the_engine_side_takes_a_request_as_it_was_checked():
    """Values are checked once, in the server (parse_sampling_params); decoding rebuilds them unchanged."""
    unchecked = AddRequest("r", [1], SamplingParams(max_tokens=0, temperature=-1.0))
    assert decode_to_engine(encode(unchecked)).sampling == unchecked.sampling


def test_send_and_receive_over_a_pipe():
    reader, writer = Pipe(duplex=False)
    for message in TO_ENGINE:
        send(writer, message)
        assert receive_to_engine(reader) == message
    send(writer, FROM_ENGINE[-1])
    assert receive_from_engine(reader) == FROM_ENGINE[-1]
    reader.close()
    writer.close()


def test_a_step_received_lazily_comes_encoded_and_decodes_to_the_same_step():
    reading, writing = Pipe(duplex=False)
    step = StepOutputs(OUTPUTS, STATS)
    send(writing, step)
    received = receive_from_engine_lazily(reading)
    assert isinstance(received, EncodedStep) and received.decode() == step
    send(writing, StepOutputs([], STATS))  # no outputs: still a step
    assert receive_from_engine_lazily(reading).decode() == StepOutputs([], STATS)


@pytest.mark.parametrize("message", [EngineReady(10, 256, (2,)), EngineFailed("no memory")])
def test_other_messages_received_lazily_come_decoded(message):
    reading, writing = Pipe(duplex=False)
    send(writing, message)
    assert receive_from_engine_lazily(reading) == message
