"""`modelgate size traffic` on a synthetic trace whose quantiles and recommendations are computed by
hand; and the LLM backend's trace recorder, whose files it reads (rotation included)."""

from __future__ import annotations

import json

import pytest

from modelgate.backends.llm.engine_messages import RequestOutput
from modelgate.backends.llm.trace_recorder import trace_recorder
from modelgate.cli import main
from modelgate.clients.size.checkpoint_shape import CheckpointShape
from modelgate.clients.size.memory import weight_bytes
from modelgate.clients.size.traffic import GpuSpec, nearest_rank, plan_windows, poisson_quantile, summarize_lengths
from modelgate.clients.size.traffic_input import TrafficInputError, TrafficRequest, read_traffic
from modelgate.core.errors import ConfigError
from tests.server_harness import EXAMPLE_REPOSITORY

DAY = 1704067200  # 2024-01-01 00:00 UTC
TINY_CONFIG = EXAMPLE_REPOSITORY / "tiny_llm" / "1" / "config.json"


def synthetic_trace() -> list[dict]:
    """Hour 0: 10 requests every 360 s, isl 10..100, osl 5, ttc 36 s.
    Hour 1: 20 requests every 180 s from 01:00 (the last at 01:57), isl 200 (one 1000), osl 50, ttc 360 s."""
    hour0 = [{"timestamp": DAY + 360 * k, "isl": 10 * (k + 1), "osl": 5, "ttc_s": 36.0} for k in range(10)]
    hour1 = [
        {"timestamp": DAY + 3600 + 180 * k, "isl": 1000 if k == 7 else 200, "osl": 50, "ttc_s": 360.0}
        for k in range(20)
    ]
    return hour0 + hour1


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_nearest_rank_and_poisson_quantiles_by_hand():
    values = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert nearest_rank(values, 0.5) == 50  # ceil(5) -> 5th
    assert nearest_rank(values, 0.91) == 100  # ceil(9.1) -> 10th
    assert nearest_rank(values, 0.9) == 90
    # Poisson(2) cdf: .1353 .4060 .6767 .8571 .9473 .9834 .9955
    assert poisson_quantile(2.0, 0.99) == 6 and poisson_quantile(2.0, 0.5) == 2
    assert poisson_quantile(0.1, 0.99) == 1  # e^-0.1 = .9048 < .99 <= .9953
    summary = summarize_lengths(values)
    assert (summary.count, summary.mean, summary.p50, summary.p90, summary.p99, summary.max) == (
        10,
        55,
        50,
        90,
        100,
        100,
    )


def test_windows_and_recommendations_by_hand():
    requests = [TrafficRequest(r["isl"], r["osl"], r["timestamp"], r["ttc_s"]) for r in synthetic_trace()]
    # tiny_llm: 1,115,264 parameters (4 layers of 245,760 linear + 256 norm; 131,072 tied embedding; 128 norm)
    config = CheckpointShape.from_file(TINY_CONFIG)
    assert weight_bytes(config, "bf16") == 2 * 1_115_264
    gpu = GpuSpec(config, memory_bytes=16 * 2**20, utilization=0.5)
    # KV budget 8 MiB - 2,230,528 = 6,158,080 bytes; KV per token 2*4*2*32*2 = 1024 B; blocks of 16: 375
    everything, hour0, hour1 = plan_windows(requests, q=0.99, window_s=3600, block_size=16, gpu=gpu)

    assert (hour0.label, hour0.num_requests, hour0.covered_s) == ("00:00-01:00", 10, 3600)
    assert hour0.arrival_rate_per_s == pytest.approx(10 / 3600) and hour0.mean_ttc_s == 36
    assert hour0.concurrency == pytest.approx(0.1)  # Little: 10/3600 per s * 36 s
    assert (hour0.max_input_len, hour0.max_output_len, hour0.max_model_len) == (100, 5, 112)  # 105 -> 7 blocks
    assert hour0.max_num_seqs == 1 and hour0.max_num_batched_tokens == 100
    assert hour0.kv_tokens == 112 and hour0.kv_bytes == 112 * 1024
    assert hour0.sequences_per_gpu == 375 // 7 == 53 and hour0.gpus_needed == 1

    # The trace ends at 01:57: the second hour is covered for 3420 s.
    assert (hour1.label, hour1.num_requests, hour1.covered_s) == ("01:00-02:00", 20, 3420)
    assert hour1.concurrency == pytest.approx(20 / 3420 * 360)  # 2.1053
    assert (hour1.max_input_len, hour1.max_output_len, hour1.max_model_len) == (1000, 50, 1056)  # ceil(19.8) -> 20th
    # Poisson(2.1053) cdf: .1218 .3783 .6482 .8376 .9374 .9793 .9941 -> 6
    assert hour1.max_num_seqs == 6 and hour1.max_num_batched_tokens == 1000 + 5
    assert hour1.kv_tokens == 6 * 1056 and hour1.kv_bytes == 6 * 1056 * 1024
    assert hour1.sequences_per_gpu == 375 // 66 == 5 and hour1.gpus_needed == 2  # 1050 tokens = 66 blocks

    assert (everything.label, everything.num_requests, everything.covered_s) == ("all", 30, 7020)
    assert everything.mean_ttc_s == pytest.approx((10 * 36 + 20 * 360) / 30)  # 252 s
    assert everything.concurrency == pytest.approx(30 / 7020 * 252)  # 1.0769
    # Poisson(1.0769) cdf: .3407 .7075 .9051 .9760 .9951 -> 4
    assert everything.max_num_seqs == 4 and everything.gpus_needed == 1
    assert (everything.max_input_len, everything.max_output_len) == (1000, 50)


def test_lower_quantile_and_local_time_windows():
    requests = [TrafficRequest(r["isl"], r["osl"], r["timestamp"], r["ttc_s"]) for r in synthetic_trace()]
    everything, first, second = plan_windows(requests, q=0.9, utc_offset_s=2 * 3600)
    assert everything.max_input_len == 200  # ceil(27) -> the 27th of 30: one 1000 and two of the 200s lie above
    assert (first.label, second.label) == ("02:00-03:00", "03:00-04:00")
    assert second.max_input_len == 200 and second.max_num_seqs == poisson_quantile(20 / 3420 * 360, 0.9) == 4
    assert everything.kv_bytes is None and everything.gpus_needed is None  # no GPU given


def test_command_line_on_a_trace_and_a_bench_json(tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    write_jsonl(trace, synthetic_trace())
    output = tmp_path / "plan.json"
    assert (
        main(
            [
                "size",
                "traffic",
                str(trace),
                "--config",
                str(TINY_CONFIG),
                "--gpu-memory-gib",
                str(16 / 1024),
                "--gpu-memory-utilization",
                "0.5",
                "--json",
                str(output),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "max input length 1000 tokens, max output length 50 tokens" in printed
    assert "01:00-02:00" in printed and "6.19 MiB" in printed  # 6 * 1056 * 1024 bytes of KV
    windows = json.loads(output.read_text())["windows"]
    assert [w["gpus_needed"] for w in windows] == [1, 1, 2]

    bench = {
        "summary": {},
        "requests": [
            {"started_at": DAY + 10, "isl": 30, "osl": 8, "ttc_s": 2.0, "error": None},
            {"started_at": DAY + 20, "isl": 60, "osl": 8, "ttc_s": 4.0, "error": None},
            {"started_at": DAY + 30, "isl": 999, "osl": 0, "ttc_s": None, "error": "HTTP 500"},
        ],
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    requests = read_traffic(path)
    assert [(r.isl, r.timestamp) for r in requests] == [(30, DAY + 10), (60, DAY + 20)]  # the failure left out
    everything = plan_windows(requests)[0]
    assert everything.concurrency == pytest.approx(2 / 10 * 3.0)  # 2 requests in 10 s, 3 s each


def test_bad_inputs_are_reported(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"isl": 3}\n')
    with pytest.raises(TrafficInputError, match="bad.jsonl:1: needs integer 'isl' and 'osl'"):
        read_traffic(path)
    assert main(["size", "traffic", str(path)]) == 2
    assert "needs integer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must divide a day"):
        plan_windows([TrafficRequest(1, 1, 0.0, 1.0)], window_s=7000)


def test_trace_recorder_writes_rotating_jsonl_that_size_traffic_reads(tmp_path):
    path = tmp_path / "logs" / "trace.jsonl"
    recorder = trace_recorder(
        "tiny", "1", {"trace_file": str(path), "trace_max_bytes": "600", "trace_backup_count": "2", "max_num_seqs": "4"}
    )
    output = RequestOutput("r", [5], "", True, "length", num_prompt_tokens=12, num_output_tokens=7, num_cached_tokens=0)
    for number in range(12):
        recorder.record(arrival=100.0, first_token=100.25, finished=101.0 + number, engine_ttft=0.2, output=output)
    recorder.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["trace.jsonl", "trace.jsonl.1", "trace.jsonl.2"]  # older ones dropped
    assert all(p.stat().st_size <= 600 for p in path.parent.iterdir())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[-1]["ttc_s"] == 12.0 and lines[-1]["ttft_s"] == 0.25 and lines[-1]["engine_ttft_s"] == 0.2
    assert {(line["model"], line["version"], line["isl"], line["osl"]) for line in lines} == {("tiny", "1", 12, 7)}
    assert [r.ttc_s for r in read_traffic(path)] == [line["ttc_s"] for line in lines]


def test_trace_recorder_is_off_by_default_and_checks_its_parameters(tmp_path):
    assert trace_recorder("tiny", "1", {"max_num_seqs": "4"}) is None
    with pytest.raises(ConfigError, match="need 'trace_file'"):
        trace_recorder("tiny", "1", {"trace_backup_count": "3"})
    with pytest.raises(ConfigError, match="trace_max_bytes"):
        trace_recorder("tiny", "1", {"trace_file": str(tmp_path / "t.jsonl"), "trace_max_bytes": "lots"})


def test_trace_recorders_of_one_file_share_it(tmp_path):
    path = tmp_path / "shared.jsonl"
    first = trace_recorder("a", "1", {"trace_file": str(path)})
    second = trace_recorder("b", "1", {"trace_file": str(tmp_path / "." / "shared.jsonl")})
    output = RequestOutput("r", [2], "", True, "stop", num_prompt_tokens=3, num_output_tokens=2, num_cached_tokens=0)
    first.record(1.0, 1.5, 2.0, 0.4, output)
    first.close()
    second.record(1.0, None, 2.0, None, output)  # still open: the handler outlives the first recorder
    first.record(1.0, 1.5, 2.0, 0.4, output)  # closed: ignored
    second.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["model"], line["ttft_s"], line["engine_ttft_s"]) for line in lines] == [
        ("a", 0.5, 0.4),
        ("b", None, None),
    ]
