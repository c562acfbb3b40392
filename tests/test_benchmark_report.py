"""benchmarks/fp8_fast_path_report.py reads the committed H100 logs of the LLM fast path into one report."""

from pathlib import Path

from benchmarks.fp8_fast_path_report import (
    attention_section,
    decode_step_section,
    gemm_section,
    throughput_section,
)

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def test_report_finds_every_figure_in_the_committed_logs():
    gemm = gemm_section(RESULTS)
    rows = [line.split() for line in gemm[2:]]
    assert len(rows) == 20  # 4 projections x M = 1, 16, 64, 256, 4096
    assert {(row[0], int(row[1])) for row in rows} >= {("qkv", 1), ("down", 4096)}
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)
    assert any(row[5] != "-" for row in rows if row[1] == "1")  # the M = 1 GEMV column
    assert any("fp8" in line and "1024" in line for line in attention_section(RESULTS))
    assert any(line.split()[:2] == ["fp8", "1"] for line in decode_step_section(RESULTS))
    throughput = throughput_section(RESULTS)
    table = [line.split() for line in throughput if line[:1].isdigit()]
    assert [row[0] for row in table] == ["128/128", "1000/1000", "2048/128"]
    assert all(len(row) == 5 and row[1].isdigit() for row in table)


def test_report_says_which_logs_are_missing(tmp_path):
    assert gemm_section(tmp_path) == ["(a) fp8_gemm_h100.log missing"]
    assert "missing logs: fp8, bf16, transformers" in throughput_section(tmp_path)
