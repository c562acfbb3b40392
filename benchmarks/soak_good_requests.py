"""The good requests of a soak, each through the client its users have, each checking its answer.

A kind opens its own clients (one sender thread each: tritonclient's clients are not shared across threads);
`send()` makes one request and raises on any failure: an error status, a timeout, a wrong answer.
"""

from __future__ import annotations

import itertools
import json
import queue
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import openai
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from benchmarks.soak_target import WAIT_S, Target

INPUT0 = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
INPUT1 = np.array([0.5, 0.25, -1.0, 8.0], dtype=np.float32)
NUM_TOKENS = 8  # per LLM request: EOS ignored, so exactly this many
PROMPT = "The capital of France is"


class WrongAnswer(AssertionError):
    pass


@dataclass
class GoodRequest:
    name: str
    send: Callable[[], None]  # one request; raises unless it was answered, and rightly
    close: Callable[[], None]


def _expect(what: str, got, wanted) -> None:
    if not np.array_equal(np.asarray(got), np.asarray(wanted)):
        raise WrongAnswer(f"{what}: got {got!r}, wanted {wanted!r}")


def _tensor_inputs(client_module) -> list:
    inputs = [client_module.InferInput(name, [4], "FP32") for name in ("INPUT0", "INPUT1")]
    for tensor, values in zip(inputs, (INPUT0, INPUT1)):
        tensor.set_data_from_numpy(values)
    return inputs


def http_add_sub(target: Target) -> GoodRequest:
    client = httpclient.InferenceServerClient(target.http_url, connection_timeout=WAIT_S, network_timeout=WAIT_S)

    def send() -> None:
        result = client.infer("add_sub", _tensor_inputs(httpclient))
        _expect("OUTPUT0", result.as_numpy("OUTPUT0"), INPUT0 + INPUT1)
        _expect("OUTPUT1", result.as_numpy("OUTPUT1"), INPUT0 - INPUT1)

    return GoodRequest("HTTP infer add_sub", send, client.close)


def grpc_add_sub(target: Target) -> GoodRequest:
    client = grpcclient.InferenceServerClient(target.grpc_url)

    def send() -> None:
        result = client.infer("add_sub", _tensor_inputs(grpcclient), client_timeout=WAIT_S)
        _expect("OUTPUT0", result.as_numpy("OUTPUT0"), INPUT0 + INPUT1)
        _expect("OUTPUT1", result.as_numpy("OUTPUT1"), INPUT0 - INPUT1)

    return GoodRequest("gRPC infer add_sub", send, client.close)


def http_ensemble(target: Target) -> GoodRequest:
    """add_sub -> add_batch_dim -> batched_scale: SCALED_SUM = 2 (INPUT0 + INPUT1) as one row."""
    client = httpclient.InferenceServerClient(target.http_url, connection_timeout=WAIT_S, network_timeout=WAIT_S)

    def send() -> None:
        result = client.infer("ensemble_add_sub_scale", _tensor_inputs(httpclient))
        _expect("SCALED_SUM", result.as_numpy("SCALED_SUM"), 2 * (INPUT0 + INPUT1)[None, :])
        _expect("DIFFERENCE", result.as_numpy("DIFFERENCE"), INPUT0 - INPUT1)

    return GoodRequest("HTTP infer ensemble", send, client.close)


def openai_client(target: Target) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{target.http_url}/v1", api_key="unused", max_retries=0, timeout=WAIT_S)


_GREEDY = {"max_tokens": NUM_TOKENS, "temperature": 0, "extra_body": {"ignore_eos": True}}


def openai_completion(target: Target) -> GoodRequest:
    client = openai_client(target)

    def send() -> None:
        completion = client.completions.create(model=target.llm_model, prompt=PROMPT, **_GREEDY)
        _expect("completion_tokens", completion.usage.completion_tokens, NUM_TOKENS)
        _expect("finish_reason", completion.choices[0].finish_reason, "length")

    return GoodRequest("OpenAI completion", send, client.close)


def openai_completion_stream(target: Target) -> GoodRequest:
    client = openai_client(target)

    def send() -> None:
        chunks = client.completions.create(
            model=target.llm_model, prompt=PROMPT, stream=True, stream_options={"include_usage": True}, **_GREEDY
        )
        with chunks:
            received = list(chunks)
        reasons = [choice.finish_reason for chunk in received for choice in chunk.choices if choice.finish_reason]
        _expect("finish reasons", reasons, ["length"])
        _expect("completion_tokens", received[-1].usage.completion_tokens, NUM_TOKENS)

    return GoodRequest("OpenAI completion stream", send, client.close)


def grpc_generate_stream(target: Target) -> GoodRequest:
    """The LLM over one long-lived ModelStreamInfer stream, as a tritonclient user streams tokens."""
    client = grpcclient.InferenceServerClient(target.grpc_url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    request_ids = (f"good-{number}" for number in itertools.count())
    sampling = json.dumps({"max_tokens": NUM_TOKENS, "temperature": 0, "ignore_eos": True})
    unfinished: set[str] = set()

    def send() -> None:
        request_id = next(request_ids)
        unfinished.add(request_id)
        client.async_stream_infer(target.llm_model, llm_inputs(prompt=PROMPT, sampling=sampling), request_id=request_id)
        while True:
            result, error = answers.get(timeout=WAIT_S)
            if error is not None:
                raise error
            response = result.get_response()
            if response.id != request_id:
                continue  # a late answer to an earlier request, which failed (timed out) already
            if response.parameters["triton_final_response"].bool_param:
                break
        unfinished.discard(request_id)
        _expect("num_output_tokens", result.as_numpy("num_output_tokens").reshape(-1)[0], NUM_TOKENS)

    def close() -> None:
        # Half-closed when every request was answered: tritonclient's cancel leaves its request thread blocked
        # for good. Only a request still waiting (it failed) is cancelled.
        client.stop_stream(cancel_requests=bool(unfinished))
        client.close()

    return GoodRequest("gRPC generate stream", send, close)


def llm_inputs(prompt: str, sampling: str) -> list[grpcclient.InferInput]:
    """An LLM request as tritonclient.grpc inputs: text_input, sampling_parameters (JSON), stream=true."""
    values = [
        ("text_input", "BYTES", np.array([prompt.encode()], dtype=object)),
        ("sampling_parameters", "BYTES", np.array([sampling.encode()], dtype=object)),
        ("stream", "BOOL", np.array([True])),
    ]
    inputs = []
    for name, datatype, array in values:
        inputs.append(grpcclient.InferInput(name, [1], datatype))
        inputs[-1].set_data_from_numpy(array)
    return inputs


def good_kinds(target: Target) -> list[Callable[[Target], GoodRequest]]:
    """Every kind the target can serve."""
    kinds = [http_add_sub, grpc_add_sub, openai_completion, openai_completion_stream, grpc_generate_stream]
    return kinds + [http_ensemble] * target.has_ensemble
