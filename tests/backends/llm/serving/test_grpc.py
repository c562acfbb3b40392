"""LLM serving over gRPC (tritonclient.grpc): streams and unary infer, checked against the engine alone."""

from __future__ import annotations

import tritonclient.grpc as grpcclient

from tests.backends.llm.serving.helpers import (
    MODEL,
    PROMPTS,
    WAIT_S,
    GrpcStream,
    greedy_sampling,
    int_output,
    is_final,
    llm_inputs,
    string_output,
    text_output,
)


def test_grpc_stream_text_joins_to_the_whole_text(server, reference):
    prompt = PROMPTS[1]
    expected = reference.greedy(reference.prompt_ids(prompt), 10)
    stream = GrpcStream(server.grpc_url, MODEL)
    try:
        stream.send("whole", prompt, greedy_sampling(10), stream=False, exclude_input_in_output=True)
        stream.send("pieces", prompt, greedy_sampling(10))
        results = stream.collect({"whole", "pieces"})
    finally:
        stream.close()
    assert len(results["whole"]) == 1 and text_output(results["whole"][0]) == expected.text
    pieces = results["pieces"]
    assert len(pieces) > 1
    assert "".join(text_output(result) for result in pieces) == expected.text
    finals = [is_final(result) for result in pieces]
    assert finals == [False] * (len(pieces) - 1) + [True]
    assert string_output(pieces[-1], "finish_reason") == "length" and int_output(pieces[-1], "num_output_tokens") == 10


def test_grpc_unary_infer_answers_the_single_non_streamed_response(server, reference):
    prompt = PROMPTS[1]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        inputs = llm_inputs(grpcclient, prompt, greedy_sampling(10), stream=False)
        result = client.infer(MODEL, inputs, client_timeout=WAIT_S)
    finally:
        client.close()
    assert text_output(result) == prompt + reference.greedy(reference.prompt_ids(prompt), 10).text
    assert int_output(result, "num_input_tokens") == len(reference.prompt_ids(prompt))


def test_concurrent_grpc_streams_each_get_their_own_text(server, reference):
    streams = [GrpcStream(server.grpc_url, MODEL) for _ in range(3)]
    try:
        for index, stream in enumerate(streams):
            stream.send(f"r{index}", PROMPTS[index], greedy_sampling(12))
        results = [stream.collect({f"r{index}"})[f"r{index}"] for index, stream in enumerate(streams)]
    finally:
        for stream in streams:
            stream.close()
    texts = ["".join(text_output(result) for result in chunks) for chunks in results]
    assert texts == [reference.greedy(reference.prompt_ids(p), 12).text for p in PROMPTS[:3]]
    assert len(set(texts)) == 3


def test_one_grpc_stream_carries_several_requests_at_once(server, reference):
    stream = GrpcStream(server.grpc_url, MODEL)
    try:
        for index, prompt in enumerate(PROMPTS):
            stream.send(f"q{index}", prompt, greedy_sampling(8 + index))
        results = stream.collect({f"q{index}" for index in range(len(PROMPTS))})
    finally:
        stream.close()
    for index, prompt in enumerate(PROMPTS):
        chunks = results[f"q{index}"]
        expected = reference.greedy(reference.prompt_ids(prompt), 8 + index)
        assert "".join(text_output(result) for result in chunks) == expected.text
        assert int_output(chunks[-1], "num_output_tokens") == 8 + index
