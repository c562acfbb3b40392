"""The LLM metrics of one served request: requests, tokens and latencies."""

from __future__ import annotations

from tests.backends.llm.serving.helpers import (
    PROMPTS,
    generate_stream,
    greedy_sampling,
    metric_delta,
    wait_server_idle,
)


def test_metrics_count_the_requests_tokens_and_latencies(server, reference):
    before = wait_server_idle(server)
    prompt = PROMPTS[4]
    body = {"text_input": prompt, "sampling_parameters": greedy_sampling(7), "stream": True}
    _, events = generate_stream(server, body)
    assert events[-1]["num_output_tokens"] == 7
    after = wait_server_idle(server)
    assert metric_delta(before, after, "modelgate_llm_generation_tokens_total") == 7
    assert metric_delta(before, after, "modelgate_llm_prompt_tokens_total") == len(reference.prompt_ids(prompt))
    for name in ("time_to_first_token_seconds", "e2e_request_latency_seconds", "queue_time_seconds"):
        assert metric_delta(before, after, f"modelgate_llm_{name}_count") == 1, name
    assert metric_delta(before, after, "modelgate_llm_inter_token_latency_seconds_count") == 6
    assert metric_delta(before, after, "modelgate_llm_time_to_first_token_seconds_sum") > 0
    assert metric_delta(before, after, "modelgate_llm_prefix_cache_queries") == len(reference.prompt_ids(prompt))
    assert after["modelgate_llm_num_preemptions"] == 0
    # One prefill, then a decode step per further token (the CPU engine launches none ahead: no CUDA graphs).
    steps = metric_delta(before, after, "modelgate_llm_engine_steps")
    decode_steps = metric_delta(before, after, "modelgate_llm_engine_decode_steps")
    assert decode_steps == 6 and steps >= 7
    assert metric_delta(before, after, "modelgate_llm_engine_steps_launched_ahead") == 0
    # Each kind's tokens and time: the six decode steps of batch 1, and the prompt's step (or chunks), which
    # computes the prompt tokens the prefix cache did not hold (an earlier test may have sent this prompt).
    assert metric_delta(before, after, "modelgate_llm_engine_decode_step_tokens") == 6
    computed = len(reference.prompt_ids(prompt)) - metric_delta(before, after, "modelgate_llm_prefix_cache_hits")
    assert computed > 0 and metric_delta(before, after, "modelgate_llm_engine_prefill_step_tokens") == computed
    assert metric_delta(before, after, "modelgate_llm_engine_decode_step_seconds") > 0
    assert metric_delta(before, after, "modelgate_llm_engine_prefill_step_seconds") > 0
