"""benchmarks/llm_served_ab.py: which build runs when, and what it reads from llm_served_vs_engine.py's output."""

import sys

from benchmarks import llm_served_ab


def test_served_rates_reads_the_per_run_lines_only():
    output = (
        "generate_stream-128-128-c256: 18,137 output tok/s\n"
        "| generate_stream 128/128 c256 | 18,137 | 21,612 | 0.84 |\n"
        "openai-chat-128-128-r20.5: 1,234.5 output tok/s\n"
    )
    assert llm_served_ab.served_rates(output) == {
        "generate_stream-128-128-c256": 18137.0,
        "openai-chat-128-128-r20.5": 1234.5,
    }


def test_rounds_alternate_the_builds_and_report_b_over_a(monkeypatch, tmp_path, capsys):
    calls = []

    def fake_run(site, passthrough, out):
        calls.append((site, passthrough, out.name))
        return {"run-c256": 100.0 if site == "/old" else 90.0}

    monkeypatch.setattr(llm_served_ab, "run_build", fake_run)
    arguments = ["llm_served_ab.py", "--a", "/old", "--rounds", "3", "--out", str(tmp_path), "--", "--runs", "x"]
    monkeypatch.setattr(sys, "argv", arguments)
    llm_served_ab.main()
    assert [(site, name) for site, _, name in calls] == [
        ("/old", "A-0"),
        (None, "B-0"),
        (None, "B-1"),
        ("/old", "A-1"),
        ("/old", "A-2"),
        (None, "B-2"),
    ]
    assert all(passthrough == ["--runs", "x"] for _, passthrough, _ in calls)
    assert "| run-c256 | 100, 100, 100 | 90, 90, 90 | 0.900 |" in capsys.readouterr().out
