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


def test_the_load_report_is_the_engines_warm_up_graph_and_kv_cache_lines(tmp_path):
    from benchmarks.llm_served_vs_engine import Server

    server = Server.__new__(Server)  # no process: only its log is read
    server.log = tmp_path / "server.log"
    server.log.write_text(
        "2026-12-07 19:15:20,001 INFO modelgate.server.cli: serving HTTP on 8000\n"
        "2026-12-07 19:15:40,622 INFO engine: warmed up eager step shapes in 1.7 s (and 31 dense attention lengths"
        " in 2.1 s)\n"
        "2026-12-07 19:15:41,000 INFO engine: captured 4 decode CUDA graphs (batch sizes [1, 2, 4, 8]) in 1.0 s\n"
        "2026-12-07 19:15:41,500 INFO modelgate.backends.llm.memory_budget: KV cache: 56061 blocks of 16 tokens\n"
        "2026-12-07 19:15:42,000 WARNING engine: captured nothing worth reporting\n"
    )
    assert server.load_report() == [
        "warmed up eager step shapes in 1.7 s (and 31 dense attention lengths in 2.1 s)",
        "captured 4 decode CUDA graphs (batch sizes [1, 2, 4, 8]) in 1.0 s",
        "KV cache: 56061 blocks of 16 tokens",
    ]


def test_the_step_cells_give_each_kinds_mean_time_and_tokens():
    from benchmarks.served_metrics import STEP_GAUGES, step_cells

    deltas = dict(zip(STEP_GAUGES, (10, 8, 6, 0.08, 2048, 0.5, 9000)))
    assert step_cells(deltas) == ["10", "80%", "60%", "10.00 @ 256", "250.00 @ 4500"]
    assert step_cells(dict(zip(STEP_GAUGES, (3, 3, 0, 0.03, 12, 0.0, 0)))) == ["3", "100%", "0%", "10.00 @ 4", ""]
    assert step_cells({}) == [""] * 5  # a server that reported no steps
