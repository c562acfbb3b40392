"""The parts of benchmarks/genai_perf_endpoints.py that need no genai-perf: cases, commands, exports, reasons."""

import argparse
import json

from benchmarks import genai_perf_endpoints as bench
from benchmarks.pinned_server import Server


def _args(**overrides) -> argparse.Namespace:
    values = dict(
        model_repository="model_repository",
        model="tiny_llm",
        tokenizer=None,
        request_count=8,
        concurrency=2,
        isl=32,
        osl=16,
        genai_perf="genai-perf",
    )
    return argparse.Namespace(**{**values, **overrides})


def test_the_cases_cover_every_endpoint_type_of_the_issue_once_each():
    names = [case.name for case in bench.CASES]
    assert len(names) == len(set(names))
    types = {case.args[case.args.index("--endpoint-type") + 1] for case in bench.CASES}
    assert types == {"chat", "completions", "kserve", "generate"}
    backends = {case.args[case.args.index("--backend") + 1] for case in bench.CASES if "--backend" in case.args}
    assert backends == {"vllm", "tensorrtllm"}
    assert [case.name for case in bench.CASES if case.fails_on_triton] == ["generate-streaming"]


def test_a_command_targets_its_protocols_port_and_names_the_model(tmp_path):
    server = bench.RunningServer(Server("modelgate", None, 8000, tmp_path / "log"), 8000, 8001, "tiny_llm")
    by_name = {case.name: case for case in bench.CASES}
    grpc = bench._genai_perf_command(by_name["kserve-tensorrtllm"], _args(), server, tmp_path)
    assert grpc[grpc.index("-u") + 1] == "127.0.0.1:8001"
    assert grpc[grpc.index("--tokenizer") + 1] == "model_repository/tiny_llm/1"
    http = bench._genai_perf_command(by_name["generate-streaming-endpoint"], _args(), server, tmp_path)
    assert http[http.index("-u") + 1] == "127.0.0.1:8000"
    assert http[http.index("--endpoint") + 1] == "v2/models/tiny_llm/generate_stream"
    assert http[http.index("--request-count") + 1] == "8" and http[http.index("--concurrency") + 1] == "2"


def test_the_export_gives_output_token_throughput_and_request_count(tmp_path):
    run = tmp_path / "tiny_llm-openai-chat-concurrency2"
    run.mkdir()
    export = {"output_token_throughput": {"unit": "tokens/sec", "avg": 12.5}, "request_count": {"avg": 8.0}}
    (run / "profile_export_genai_perf.json").write_text(json.dumps(export))
    assert bench._read_export(tmp_path) == (12.5, 8.0)
    assert bench._read_export(tmp_path / "nothing") == (None, None)


def test_the_failure_reason_is_perf_analyzers_error_else_genai_perfs_exception():
    perf_analyzer = "noise\nError: Failed to init manager inputs: 'max_tokens' is not found\nValueError: later\n"
    assert bench._failure_reason(perf_analyzer, 1, None, 8) == (
        "Error: Failed to init manager inputs: 'max_tokens' is not found"
    )
    assert bench._failure_reason("Traceback\n  x\nKeyError: 'text_output'\n", 1, None, 8) == "KeyError: 'text_output'"
    assert bench._failure_reason("", 0, 6.0, 8) == "the export counts 6.0 requests of 8"
    assert bench._failure_reason("", None, None, 8) == "genai-perf timed out"
