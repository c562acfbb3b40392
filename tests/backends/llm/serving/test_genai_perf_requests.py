"""The requests genai-perf 0.0.16 sends (captured from its inputs.json and perf_analyzer's command), replayed with
tritonclient and requests: each endpoint type gets what Triton answers it.

- `--endpoint-type kserve --backend tensorrtllm`: perf_analyzer checks every input against the model's
  metadata, then sends over a gRPC stream `text_input` (BYTES), `max_tokens` (INT32), `exclude_input_in_output`
  (BOOL), with `--streaming` `stream` (BOOL), with `--output-tokens-mean-deterministic` `min_length` (INT32),
  and `--extra-inputs NAME:VALUE` as more one-element inputs.
- `--endpoint-type kserve --backend vllm`: `text_input`, `exclude_input_in_output`, `stream`, and
  `sampling_parameters` whose numbers are strings (`{"max_tokens": "16", "min_tokens": "16"}`).
- `--endpoint-type generate`: POST .../generate with `{"text_input": [prompt], "max_tokens": N}`, and with
  `--streaming` `"stream": true` added, to the same route (not generate_stream).
"""

from __future__ import annotations

import json

import numpy as np
import requests
import tritonclient.grpc as grpcclient

from tests.backends.llm.serving.helpers import (
    MODEL,
    PROMPTS,
    WAIT_S,
    GrpcStream,
    int_output,
    is_final,
    model_url,
    text_output,
)

# What perf_analyzer finds in the metadata for the inputs genai-perf sends with --backend tensorrtllm.
TENSORRTLLM_INPUTS = {
    "text_input": "BYTES",
    "max_tokens": "INT32",
    "exclude_input_in_output": "BOOL",
    "stream": "BOOL",
    "min_length": "INT32",
}
TRITON_COUNT_MESSAGE = (  # Triton's http_server.cc, answered with status 200
    "generate expects model to produce exactly 1 response, use generate stream for model that "
    "generates various number of responses"
)


def _grpc_inputs(values: dict[str, np.ndarray]) -> list:
    """One InferInput per array, its datatype the array's (BYTES for objects), as perf_analyzer builds them."""
    inputs = []
    for name, array in values.items():
        datatype = "BYTES" if array.dtype == object else grpcclient.np_to_triton_dtype(array.dtype)
        inputs.append(grpcclient.InferInput(name, list(array.shape), datatype))
        inputs[-1].set_data_from_numpy(array)
    return inputs


def _tensorrtllm_request(prompt: str, max_tokens: int, **extra: np.ndarray) -> dict[str, np.ndarray]:
    """What genai-perf sends with --backend tensorrtllm --streaming (perf_analyzer's --shape NAME:1 each)."""
    return {
        "text_input": np.array([prompt.encode()], dtype=object),
        "max_tokens": np.array([max_tokens], dtype=np.int32),
        "exclude_input_in_output": np.array([True]),
        "stream": np.array([True]),
        **extra,
    }


def _stream_results(server, requests_by_id: dict[str, dict[str, np.ndarray]], **parameters) -> dict[str, list]:
    """Each request's results over one gRPC stream; `parameters` are every request's parameters."""
    stream = GrpcStream(server.grpc_url, MODEL)
    try:
        for request_id, values in requests_by_id.items():
            stream.client.async_stream_infer(
                MODEL, _grpc_inputs(values), request_id=request_id, parameters=parameters or None
            )
        return stream.collect(set(requests_by_id))
    finally:
        stream.close()


def test_the_metadata_declares_every_input_genai_perf_sends_for_tensorrtllm(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        metadata = client.get_model_metadata(MODEL, as_json=True)
        config = client.get_model_config(MODEL, as_json=True)["config"]
    finally:
        client.close()
    declared = {tensor["name"]: (tensor["datatype"], tensor["shape"]) for tensor in metadata["inputs"]}
    assert {name: declared.get(name) for name in TENSORRTLLM_INPUTS} == {
        name: (datatype, ["1"]) for name, datatype in TENSORRTLLM_INPUTS.items()
    }
    assert all(tensor.get("optional") for tensor in config["input"])  # a request sends only what it sets


def test_kserve_tensorrtllm_requests_stream_their_max_tokens(server):
    """genai-perf's exact request, with and without --output-tokens-mean-deterministic (min_length)."""
    prompt = PROMPTS[1]
    results = _stream_results(
        server,
        {
            "plain": _tensorrtllm_request(prompt, 10),
            "deterministic": _tensorrtllm_request(prompt, 10, min_length=np.array([10], dtype=np.int32)),
        },
    )
    assert 1 <= int_output(results["plain"][-1], "num_output_tokens") <= 10
    pieces = results["deterministic"]
    assert [is_final(result) for result in pieces] == [False] * (len(pieces) - 1) + [True]
    assert int_output(pieces[-1], "num_output_tokens") == 10


def test_kserve_tensorrtllm_extra_inputs_set_sampling(server, reference):
    """--extra-inputs temperature:0 (greedy; EOS ignored through a request parameter, as the reference does):
    the streamed pieces are the engine's greedy text, the prompt left out as exclude_input_in_output asks, and
    a non-streamed request answers the same text whole, after its prompt."""
    prompt = PROMPTS[2]
    greedy = {"temperature": np.array([0.0], dtype=np.float32)}
    whole = _tensorrtllm_request(prompt, 8, **greedy)
    whole.update(stream=np.array([False]), exclude_input_in_output=np.array([False]))
    requests_by_id = {"pieces": _tensorrtllm_request(prompt, 8, **greedy), "whole": whole}
    results = _stream_results(server, requests_by_id, ignore_eos=True)
    streamed = "".join(text_output(result) for result in results["pieces"])
    assert len(results["pieces"]) > 1 and len(results["whole"]) == 1
    assert streamed == reference.greedy(reference.prompt_ids(prompt), 8).text
    assert text_output(results["whole"][0]) == prompt + streamed


def test_tensor_inputs_override_request_parameters_and_sampling_parameters(server):
    values = _tensorrtllm_request(PROMPTS[0], 5, min_length=np.array([5], dtype=np.int32))
    values["sampling_parameters"] = np.array([json.dumps({"max_tokens": 3}).encode()], dtype=object)
    stream = GrpcStream(server.grpc_url, MODEL)
    try:
        stream.client.async_stream_infer(MODEL, _grpc_inputs(values), request_id="r", parameters={"max_tokens": 4})
        results = stream.collect({"r"})["r"]
    finally:
        stream.close()
    assert int_output(results[-1], "num_output_tokens") == 5


def test_kserve_vllm_sampling_parameters_with_string_numbers(server):
    """genai-perf writes --backend vllm's max_tokens and min_tokens as JSON strings."""
    values = {
        "text_input": np.array([PROMPTS[3].encode()], dtype=object),
        "exclude_input_in_output": np.array([True]),
        "stream": np.array([True]),
        "sampling_parameters": np.array([json.dumps({"max_tokens": "7", "min_tokens": "7"}).encode()], dtype=object),
    }
    results = _stream_results(server, {"v": values})["v"]
    assert int_output(results[-1], "num_output_tokens") == 7


def test_generate_with_stream_true_answers_as_triton(server):
    """genai-perf's `generate --streaming` body to .../generate: the model streams, and generate takes one
    response, so Triton answers 200 with an error object (genai-perf then fails on it: no text_output)."""
    body = {"text_input": [PROMPTS[0]], "stream": True, "max_tokens": 8, "min_tokens": 8}
    response = requests.post(model_url(server, "generate"), json=body, timeout=WAIT_S)
    assert response.status_code == 200
    assert response.json()["error"].startswith(TRITON_COUNT_MESSAGE)


def test_generate_stream_takes_the_body_genai_perf_sends_to_generate(server, reference):
    """The same body sent to generate_stream (genai-perf's `--endpoint v2/models/M/generate_stream`): one
    event per piece, each with text_output; --extra-inputs temperature:0 and ignore_eos:true make it greedy."""
    prompt = PROMPTS[4]
    body = {"text_input": [prompt], "stream": True, "max_tokens": 8, "temperature": 0, "ignore_eos": True}
    response = requests.post(model_url(server, "generate_stream"), json=body, timeout=WAIT_S)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [json.loads(block[len("data: ") :]) for block in response.text.split("\n\n") if block]
    assert len(events) > 1
    assert "".join(event["text_output"] for event in events) == reference.greedy(reference.prompt_ids(prompt), 8).text
    assert events[-1]["num_output_tokens"] == 8 and events[-1]["finish_reason"] == "length"


def test_generate_takes_the_body_genai_perf_sends_without_streaming(server, reference):
    prompt = PROMPTS[1]
    body = {"text_input": [prompt], "max_tokens": 6, "temperature": 0, "ignore_eos": True}
    response = requests.post(model_url(server, "generate"), json=body, timeout=WAIT_S)
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == prompt + reference.greedy(reference.prompt_ids(prompt), 6).text
    assert response.json()["num_output_tokens"] == 6
