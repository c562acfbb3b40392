"""`modelgate tune` end to end on the CPU: the example tiny_llm, a trace of a few requests, two candidates.

One real run (each candidate served by its own `modelgate serve` process) for the module; the other tests rerun
the command on its output folder with serving made impossible, so what they check comes from the log alone.
"""

import csv
import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.cli import main
from modelgate.clients.tune import tuner
from modelgate.clients.tune.choose import Targets, choose
from modelgate.clients.tune.measurement import Measurement
from tests.server_harness import EXAMPLE_REPOSITORY

MODEL_DIR = EXAMPLE_REPOSITORY / "tiny_llm"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRACE = [(12, 6), (30, 8), (20, 4), (40, 10)]  # (isl, osl) as the server's trace recorder writes them
GENEROUS = Targets(ttft_p99_ms=60_000, itl_p99_ms=60_000)
IMPOSSIBLE = Targets(ttft_p99_ms=0.001, itl_p99_ms=0.001)


def write_trace(path):
    with path.open("w") as trace:
        for number, (isl, osl) in enumerate(TRACE):
            line = {"timestamp": 1_700_000_000 + 0.25 * number, "model": "tiny_llm", "version": "1", "isl": isl}
            trace.write(
                json.dumps({**line, "osl": osl, "ttft_s": 0.05, "ttc_s": 0.3, "finish_reason": "length"}) + "\n"
            )
    return path


def tune(output_dir, trace, targets: Targets, *extra: str) -> int:
    return main(
        [
            "tune", "--model-dir", str(MODEL_DIR), "--trace-file", str(trace), "--output-dir", str(output_dir),
            "--ttft-p99-ms", str(targets.ttft_p99_ms), "--itl-p99-ms", str(targets.itl_p99_ms),
            "--device", "cpu", "--search", "max_num_seqs=4", "--refine-rounds", "0", "--warmup-requests", "1",
            *extra,
        ]
    )  # fmt: skip


def log_of(output_dir) -> list[Measurement]:
    return [Measurement.model_validate_json(line) for line in (output_dir / "tune_log.jsonl").read_text().splitlines()]


def chosen_config(output_dir) -> ModelConfig:
    return text_format.Parse((output_dir / "config.pbtxt").read_text(), ModelConfig())


@pytest.fixture
def no_serving(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a rerun served a candidate the log already had")

    monkeypatch.setattr(tuner, "serve_repository", refuse)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    trace = write_trace(folder / "trace.jsonl")
    before = sorted(p.name for p in MODEL_DIR.rglob("*")), (MODEL_DIR / "config.pbtxt").read_text()
    status = tune(folder / "out", trace, GENEROUS)
    after = sorted(p.name for p in MODEL_DIR.rglob("*")), (MODEL_DIR / "config.pbtxt").read_text()
    assert after == before  # candidates are served from repositories of their own
    return folder / "out", trace, status


def test_both_candidates_are_measured_and_logged(tuned):
    output_dir, _, status = tuned
    measurements = log_of(output_dir)
    assert [m.overrides for m in measurements] == [{}, {"max_num_seqs": "4"}]  # the model's own config first
    assert [m.phase for m in measurements] == ["baseline", "coarse"]
    for m in measurements:
        assert m.served and m.num_ok == len(TRACE) and m.num_errors == 0, m.error
        assert m.output_tok_s > 0 and m.ttft_p99_ms > 0 and m.itl_p99_ms > 0
        assert (output_dir / "candidates" / m.id / "bench.json").is_file()
        assert "ready" in (output_dir / "candidates" / m.id / "server.log").read_text()
    assert status == 0


def test_the_chosen_config_is_the_highest_throughput_meeting_the_targets(tuned):
    output_dir, _, _ = tuned
    measurements = log_of(output_dir)
    best = max(measurements, key=lambda m: m.output_tok_s)  # both meet these targets
    config = chosen_config(output_dir)
    assert config.name == "tiny_llm" and config.backend == "llm"
    expected_seqs = best.settings["max_num_seqs"]
    assert config.parameters["max_num_seqs"].string_value == expected_seqs
    assert config.parameters["num_kv_blocks"].string_value == "256"  # the rest of the model's config kept
    with (output_dir / "candidates.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert [row["chosen"] for row in rows] == [str(m.key == best.key) for m in measurements]
    assert (output_dir / "tune.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_rerun_resumes_from_the_log_without_serving(tuned, no_serving, tmp_path, capsys):
    output_dir, trace, _ = tuned
    log_before = (output_dir / "tune_log.jsonl").read_text()
    assert tune(output_dir, trace, GENEROUS) == 0
    assert (output_dir / "tune_log.jsonl").read_text() == log_before
    assert "2 coarse candidates (2 already in" in capsys.readouterr().out


def test_other_targets_choose_again_from_the_log_and_say_none_meets_them(tuned, no_serving, capsys):
    output_dir, trace, _ = tuned
    assert tune(output_dir, trace, IMPOSSIBLE) == 1
    closest = choose(log_of(output_dir), IMPOSSIBLE).measurement
    assert chosen_config(output_dir).parameters["max_num_seqs"].string_value == closest.settings["max_num_seqs"]
    assert "# WARNING: no candidate meets" in (output_dir / "config.pbtxt").read_text()
    assert "no candidate meets" in capsys.readouterr().out
    assert tune(output_dir, trace, GENEROUS) == 0  # and back


def test_a_run_with_no_budget_left_serves_nothing_and_says_what_is_left(tuned, no_serving, capsys):
    output_dir, trace, _ = tuned
    assert tune(output_dir, trace, GENEROUS, "--search", "max_num_seqs=4,8", "--time-budget-s", "0") == 0
    out = capsys.readouterr().out
    assert "1 candidate(s) of this phase unmeasured: rerun to resume" in out
    assert len(log_of(output_dir)) == 2


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (["--search", "max_num_sequences=4"], "'max_num_sequences' is not an engine setting tune can vary"),
        (["--search", "max_num_seqs=0"], "max_num_seqs=0: allowed range is [1, inf)"),
        (["--candidate", "kv_cache_dtype"], "expected NAME=V"),
        (["--device", "gpu0"], "device"),
        (["--model-dir", str(EXAMPLE_REPOSITORY / "no_such_model")], "does not exist"),
        (["--model-dir", str(EXAMPLE_REPOSITORY / "add_sub")], "tune serves LLM models"),
    ],
)
def test_bad_input_is_refused_before_anything_is_served(tuned, no_serving, change, says, capsys):
    output_dir, trace, _ = tuned
    assert tune(output_dir, trace, GENEROUS, *change) == 2
    assert says in capsys.readouterr().err


def test_a_log_of_other_traffic_is_refused(tuned, no_serving, tmp_path, capsys):
    output_dir, _, _ = tuned
    other = tmp_path / "other.jsonl"
    other.write_text('{"isl": 5, "osl": 5, "timestamp": 1.0}\n{"isl": 6, "osl": 5, "timestamp": 2.0}\n')
    assert tune(output_dir, other, GENEROUS) == 2
    assert "written by a tune run of another" in capsys.readouterr().err
