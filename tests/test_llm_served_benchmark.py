"""benchmarks/llm_served_vs_engine.py: its runs, and how many unmeasured requests go first."""

from benchmarks.llm_served_vs_engine import parse_run


def test_a_run_is_protocol_lengths_load_and_requests():
    run = parse_run("generate_stream:128/128:256:1000")
    assert (run.protocol, run.isl, run.osl, run.concurrency, run.num_requests) == (
        "generate_stream",
        128,
        128,
        256,
        1000,
    )
    assert run.load_arguments() == ["--concurrency", "256"]
    assert parse_run("openai-chat:1000/1000:r20:600").load_arguments() == ["--request-rate", "20.0"]


def test_warm_up_fills_the_measured_concurrency_within_a_quarter_of_the_run():
    assert parse_run("generate_stream:128/128:256:1000").warmup_requests == 250
    assert parse_run("generate_stream:128/128:64:1000").warmup_requests == 64
    assert parse_run("generate_stream:128/128:1:20").warmup_requests == 1  # TTFT at concurrency 1: one
    assert parse_run("generate_stream:128/128:32:40").warmup_requests == 16
    assert parse_run("generate_stream:1000/1000:r20:600").warmup_requests == 16
