"""`modelgate bench llm` against a running server with the example tiny_llm, over every protocol.

One server for the module; its tiny_llm copy also writes a request trace (the backend's trace
recorder), which must agree with what the benchmark measured. Token counts are checked against
the server's own counter (modelgate_llm_generation_tokens_total).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from modelgate.clients.bench.llm_bench import run_llm_bench
from modelgate.clients.bench.llm_settings import LengthSettings, LLMBenchSettings, LoadSettings, PromptSettings
from modelgate.clients.bench.patterns import CLASS_NAMES, class_lengths
from modelgate.clients.bench.plots import PLOT_FILES
from tests.server_harness import EXAMPLE_REPOSITORY, copy_example_model, start_server

MODEL = "tiny_llm"
TOKENIZER = EXAMPLE_REPOSITORY / MODEL / "1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = LengthSettings(pattern="mix", short_isl=12, long_isl=48, short_osl=4, long_osl=12, max_model_len=256)


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    model_dir = copy_example_model(repository, MODEL)
    trace = tmp_path_factory.mktemp("trace") / "tiny_llm.jsonl"
    with (model_dir / "config.pbtxt").open("a") as config:
        config.write(f'parameters {{ key: "trace_file" value {{ string_value: "{trace}" }} }}\n')
        config.write('parameters { key: "show_progress" value { string_value: "false" } }\n')
    running = start_server([repository])
    running.trace_file = trace
    yield running
    running.stop()


def generated_tokens(server) -> float:
    text = requests.get(server.metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelgate_llm_generation_tokens_total" and sample.labels["model"] == MODEL:
                return sample.value
    return 0.0


def trace_lines(server) -> list[dict]:
    if not server.trace_file.exists():
        return []
    return [json.loads(line) for line in server.trace_file.read_text().splitlines()]


def settings(
    url: str, protocol: str, lengths: LengthSettings, prompts: PromptSettings | None = None, **load
) -> LLMBenchSettings:
    return LLMBenchSettings(
        url=url,
        protocol=protocol,
        model=MODEL,
        tokenizer=TOKENIZER,
        prompts=prompts or PromptSettings(),
        lengths=lengths,
        load=LoadSettings(**load),
        progress=False,
    )


def check_records(result, exact_isl: bool = True) -> None:
    """Every measure present and consistent, for every measured request."""
    assert result.records and all(r.error is None for r in result.records + result.warmup)
    for record in result.records:
        assert record.osl == record.planned_osl  # max_tokens with ignore_eos
        assert record.finish_reason == "length"
        assert (record.isl == record.planned_isl) if exact_isl else (record.isl > record.planned_isl)
        assert 0 < record.ttft_s <= record.ttc_s <= record.e2e_s
        assert record.start_s >= 0 and record.started_at > 0
        assert len(record.itl_s) == len(record.itl_positions) <= record.osl - 1
        assert all(0 < p < record.osl for p in record.itl_positions)
        assert record.itl_positions == sorted(set(record.itl_positions))
        assert all(gap >= 0 for gap in record.itl_s)
        assert record.tpot_s is not None and record.tpot_s >= 0


def check_summary(result) -> None:
    summary = result.summary
    assert summary["num_ok"] == len(result.records) and summary["num_errors"] == 0
    assert summary["total_output_tokens"] == sum(r.osl for r in result.records)
    assert summary["request_throughput_per_s"] > 0 and summary["output_token_throughput_per_s"] > 0
    for key in ("ttft_s", "itl_s", "tpot_s", "ttc_s", "e2e_s", "isl", "osl"):
        values = summary[key]
        assert values["min"] <= values["p50"] <= values["p90"] <= values["p99"] <= values["max"], key
    for label in ("TTFT", "ITL", "TTC", "E2E", "req/s", "tok/s"):
        assert label in result.table


def test_generate_stream_four_classes(llm_server):
    tokens_before, trace_before = generated_tokens(llm_server), len(trace_lines(llm_server))
    result = run_llm_bench(
        settings(
            llm_server.http_url, "generate_stream", CLASSES, concurrency=3, num_requests=10, warmup_requests=1, seed=3
        )
    )
    check_records(result)
    check_summary(result)
    assert {r.pattern for r in result.records} == set(CLASS_NAMES)
    for record in result.records:
        assert (record.planned_isl, record.planned_osl) == class_lengths(CLASSES, record.pattern)
    measured = result.records + result.warmup
    assert generated_tokens(llm_server) - tokens_before == sum(r.osl for r in measured)
    assert set(result.summary["per_pattern"]) == set(CLASS_NAMES)
    # The server's trace holds one line per request, with the same lengths and consistent times.
    new_lines = trace_lines(llm_server)[trace_before:]
    assert sorted((line["isl"], line["osl"]) for line in new_lines) == sorted((r.isl, r.osl) for r in measured)
    assert all(0 < line["ttft_s"] <= line["ttc_s"] and line["finish_reason"] == "length" for line in new_lines)
    # The engine's own share of the TTFT: from the request's arrival in the engine process to its first token.
    assert all(0 < line["engine_ttft_s"] <= line["ttft_s"] for line in new_lines)


def test_grpc_stream_poisson_arrivals_normal_lengths(llm_server):
    tokens_before = generated_tokens(llm_server)
    lengths = LengthSettings(pattern="normal", isl=24, isl_stddev=6, osl=8, osl_stddev=2)
    result = run_llm_bench(settings(llm_server.grpc_url, "grpc", lengths, request_rate=20.0, num_requests=6))
    check_records(result)
    check_summary(result)
    assert len({(r.planned_isl, r.planned_osl) for r in result.records}) > 1  # drawn, not fixed
    assert generated_tokens(llm_server) - tokens_before == sum(r.osl for r in result.records)


def test_openai_chat_counts_tokens_from_usage(llm_server):
    tokens_before = generated_tokens(llm_server)
    lengths = LengthSettings(pattern="fixed", isl=16, osl=6)
    # Corpus prompts: English words meet the template's text at a word boundary, so the count around them is
    # steady; random-token text can merge with the template's neighbouring characters and move it by a token.
    corpus = PromptSettings(source="corpus")
    result = run_llm_bench(settings(llm_server.http_url, "openai-chat", lengths, corpus, concurrency=2, num_requests=4))
    check_records(result, exact_isl=False)  # the chat template adds tokens around the prompt
    check_summary(result)
    assert len({r.isl for r in result.records}) == 1  # the same template around the same length
    assert generated_tokens(llm_server) - tokens_before == 4 * 6
    assert result.summary["ttft_vs_isl_fit"] is None  # one input length: no slope


def test_command_line_writes_json_csv_and_plots(llm_server, tmp_path):
    tokens_before = generated_tokens(llm_server)
    command = [
        sys.executable,
        "-m",
        "modelgate",
        "bench",
        "llm",
        "--url",
        llm_server.http_url,
        "-m",
        MODEL,
        "--tokenizer",
        str(TOKENIZER),
        "--pattern",
        "mix",
        "--short-isl",
        "12",
        "--long-isl",
        "40",
        "--short-osl",
        "4",
        "--long-osl",
        "10",
        "--concurrency",
        "4",
        "--num-requests",
        "8",
        "--output-dir",
        str(tmp_path),
        "--no-progress",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr
    assert "requests 8 ok, 0 failed" in result.stdout and "TTFT" in result.stdout
    document = json.loads((tmp_path / "bench.json").read_text())
    assert document["summary"]["num_ok"] == 8 and len(document["requests"]) == 8
    assert document["settings"]["protocol"] == "generate_stream"
    assert generated_tokens(llm_server) - tokens_before == document["summary"]["total_output_tokens"]
    with (tmp_path / "requests.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 8 and all(float(row["ttft_s"]) <= float(row["ttc_s"]) for row in rows)
    assert [int(row["osl"]) for row in rows] == [r["planned_osl"] for r in document["requests"]]
    for name in PLOT_FILES:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, name


def test_client_processes_send_the_plans_of_one_run_with_prompts_of_their_own(llm_server, tmp_path):
    tokens_before = generated_tokens(llm_server)
    saved = tmp_path / "sent.jsonl"
    lengths = LengthSettings(pattern="uniform", isl_min=8, isl_max=40, osl_min=2, osl_max=8, max_model_len=256)
    one = settings(llm_server.http_url, "generate_stream", lengths, concurrency=3, num_requests=9, seed=5)
    three = settings(
        llm_server.http_url,
        "generate_stream",
        lengths,
        PromptSettings(save_file=saved),
        concurrency=3,
        num_requests=9,
        warmup_requests=2,
        seed=5,
        client_processes=3,
    )
    single, spread = run_llm_bench(one), run_llm_bench(three)
    check_records(spread)
    check_summary(spread)
    # the same plans (indexes and lengths), split across the processes and merged back in index order
    assert [(r.index, r.planned_isl, r.planned_osl) for r in spread.records] == [
        (r.index, r.planned_isl, r.planned_osl) for r in single.records
    ]
    assert len(spread.warmup) == 2 and min(r.start_s for r in spread.records) >= 0
    prompts = [tuple(r.prompt.token_ids) for r in spread.records]
    assert len(set(prompts)) == len(prompts)  # no two processes drew the same prompts
    assert saved.read_text().count("\n") == 9
    served = generated_tokens(llm_server) - tokens_before
    warmup_tokens = sum(r.osl for r in spread.warmup)
    assert served == sum(r.osl for r in single.records + spread.records) + warmup_tokens


def test_each_client_process_needs_a_share_of_the_load():
    with pytest.raises(ValueError, match="concurrency 2 is less than client_processes 3"):
        LoadSettings(concurrency=2, num_requests=10, client_processes=3)
    with pytest.raises(ValueError, match="num_requests 2 is less than client_processes 3"):
        LoadSettings(request_rate=5.0, num_requests=2, client_processes=3)
