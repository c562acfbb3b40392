"""The non-timing parts of benchmarks/python_backend_vs_triton.py: repositories, answer checks, peer setup, table."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from benchmarks import python_backend_vs_triton
from benchmarks.add_sub_load import AnswerCheck, Tally, WrongAnswer, http_check, result_line
from benchmarks.add_sub_repository import EXAMPLE_MODEL, build_repository, isolation_parameter
from benchmarks.add_sub_requests import INPUT0, INPUT1, check_grpc_answer, grpc_request
from benchmarks.bare_http_peer import FixedResponse
from benchmarks.pinned_server import Server
from benchmarks.protocol_case import Measured
from benchmarks.python_backend_report import (
    Row,
    median_rows,
    ratios_to_peer,
    table_lines,
    warning_lines,
    write_json,
)
from benchmarks.triton_peer import PeerUnavailable, TritonPeer
from modelgate.core.config_files import read_config_file


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_repository_copy_sets_the_isolation_parameter_and_keeps_the_rest(tmp_path, isolation):
    repository = build_repository(tmp_path, f"modelgate-{isolation}", isolation)
    config = read_config_file(repository / "add_sub" / "config.pbtxt")
    assert config.parameters["isolation"].string_value == isolation
    original = read_config_file(EXAMPLE_MODEL / "config.pbtxt")
    del config.parameters["isolation"]
    assert config == original
    assert (repository / "add_sub" / "1" / "model.py").read_bytes() == (EXAMPLE_MODEL / "1" / "model.py").read_bytes()


def test_the_peer_gets_the_example_config_verbatim(tmp_path):
    repository = build_repository(tmp_path, "triton", None)
    assert (repository / "add_sub" / "config.pbtxt").read_text() == (EXAMPLE_MODEL / "config.pbtxt").read_text()


def test_unknown_isolation_is_refused():
    with pytest.raises(ValueError, match="thread, process"):
        isolation_parameter("container")


def _grpc_answer(output1: np.ndarray) -> bytes:
    response = service_pb2.ModelInferResponse(model_name="add_sub", model_version="1")
    for name, values in (("OUTPUT0", INPUT0 + INPUT1), ("OUTPUT1", output1)):
        response.outputs.add(name=name, datatype="FP32", shape=[4])
        response.raw_output_contents.append(values.astype("<f4").tobytes())
    return response.SerializeToString()


def test_grpc_answers_are_checked_by_value_and_right_bytes_remembered():
    check = AnswerCheck(check_grpc_answer)
    right = _grpc_answer(INPUT0 - INPUT1)
    check.check(right)
    assert check.known_good == {right}
    with pytest.raises(WrongAnswer):
        check.check(_grpc_answer(INPUT1 - INPUT0))
    assert check.known_good == {right}


def test_http_json_answers_are_checked_by_value():
    outputs = [
        {"name": "OUTPUT0", "datatype": "FP32", "shape": [4], "data": (INPUT0 + INPUT1).tolist()},
        {"name": "OUTPUT1", "datatype": "FP32", "shape": [4], "data": (INPUT0 - INPUT1).tolist()},
    ]
    check = http_check()
    check.check(FixedResponse(json.dumps({"outputs": outputs}).encode(), "application/json", None))
    outputs[1]["data"] = (INPUT0 * 2).tolist()
    with pytest.raises(WrongAnswer):
        check.check(FixedResponse(json.dumps({"outputs": outputs}).encode(), "application/json", None))


def test_the_grpc_request_carries_both_inputs_raw():
    request = grpc_request()
    assert [tensor.name for tensor in request.inputs] == ["INPUT0", "INPUT1"]
    assert request.raw_input_contents == [INPUT0.tobytes(), INPUT1.tobytes()]


def test_result_line_reports_checks_and_cpu():
    tally = Tally(latencies_us=[100.0, 200.0, 300.0], errors=1, wrong=2)
    fields = dict(field.split("=") for field in result_line(tally, 1e6, 5e5).split()[1:])
    assert fields["requests"] == "3" and fields["errors"] == "1" and fields["wrong"] == "2"
    assert float(fields["p50_us"]) == 200.0 and fields["cpu_us"] == "500000"


def _measured(rate: float, **overrides) -> Measured:
    fields = dict(
        requests_per_s=rate,
        p50_ms=5.0,
        p99_ms=9.0,
        errors=0,
        wrong=0,
        server_cpu=1.0,
        generator_cpu=0.5,
        other_cpu=0.0,
        server_processes=1,
    )
    return Measured(**(fields | overrides))


ROWS = [
    Row("triton", "process", "http", _measured(5000, server_processes=2)),
    Row("modelgate", "thread", "http", _measured(2500)),
    Row("modelgate", "process", "http", _measured(5500, server_processes=2)),
    Row("triton", "process", "grpc", _measured(4000, server_processes=2)),
    Row("modelgate", "thread", "grpc", _measured(2000)),
]


def test_ratios_are_to_triton_on_the_same_protocol():
    assert ratios_to_peer(ROWS) == [1.0, 0.5, 1.1, 1.0, 0.5]
    assert ratios_to_peer([Row("modelgate", "thread", "grpc", _measured(2000))]) == [None]


def test_the_summary_of_rounds_takes_each_cases_median_round():
    rounds = [
        [Row("triton", "process", "http", _measured(rate)), Row("modelgate", "process", "http", _measured(mine))]
        for rate, mine in [(5000, 4000), (3000, 4200), (4000, 3900), (4500, 4100)]
    ]
    summary = median_rows(rounds)
    assert [(row.server, row.measured.requests_per_s) for row in summary] == [("triton", 4000), ("modelgate", 4000)]
    assert median_rows(rounds[:1]) == rounds[0]


def test_table_groups_protocols_and_puts_triton_last():
    lines = table_lines(ROWS)
    body = [line.split() for line in lines[2:]]
    assert [(cells[0], cells[1], cells[2]) for cells in body] == [
        ("modelgate", "thread", "http"),
        ("modelgate", "process", "http"),
        ("triton", "process", "http"),
        ("modelgate", "thread", "grpc"),
        ("triton", "process", "grpc"),
    ]
    assert [cells[cells.index("|", 4) + 1] for cells in body] == ["0.50x", "1.10x", "1.00x", "0.50x", "1.00x"]
    assert body[0][4] == "2,500"


def test_warnings_name_failures_a_busy_generator_a_noisy_machine_and_isolation_not_in_effect():
    rows = [
        Row("triton", "process", "grpc", _measured(4000, generator_cpu=0.95, server_processes=2)),
        Row("modelgate", "thread", "grpc", _measured(2000, errors=3, wrong=1, other_cpu=0.5)),
        Row("modelgate", "process", "grpc", _measured(2000)),
    ]
    warnings = "\n".join(warning_lines(rows))
    assert "ERRORS in modelgate thread grpc: 3 failed requests, 1 wrong answers" in warnings
    assert "triton process grpc: the load generator used 95%" in warnings
    assert "modelgate thread grpc: other processes used 0.50 cores" in warnings
    assert "modelgate process grpc: 1 process(es)" in warnings
    assert "isolation parameter is not in effect" not in "\n".join(warning_lines(ROWS))


def test_json_has_one_object_per_row_with_its_ratio(tmp_path):
    path = tmp_path / "rows.json"
    write_json(path, ROWS, {"concurrency": 16})
    written = json.loads(path.read_text())
    assert written["environment"] == {"concurrency": 16}
    assert [written["rows"][1][key] for key in ("server", "isolation", "protocol")] == ["modelgate", "thread", "http"]
    assert [row["ratio_to_triton"] for row in written["rows"]] == [1.0, 0.5, 1.1, 1.0, 0.5]
    assert written["rows"][2]["requests_per_s"] == 5500


def _scripts(tmp_path: Path, setup_body: str) -> Path:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "setup.sh").write_text(f"#!/usr/bin/env bash\n{setup_body}\n")
    return scripts


def test_a_peer_already_unpacked_is_not_set_up_again(tmp_path):
    install = tmp_path / "peer"
    (install / "dist").mkdir(parents=True)
    (install / "dist" / "tritonserver").touch()
    (install / "site").write_text("x")
    TritonPeer(_scripts(tmp_path, "exit 1"), install).ensure_set_up()


def test_setup_runs_when_the_peer_is_missing(tmp_path):
    setup = 'mkdir -p "$TRITON_PEER/dist" && touch "$TRITON_PEER/dist/tritonserver" "$TRITON_PEER/site"'
    peer = TritonPeer(_scripts(tmp_path, setup), tmp_path / "peer")
    peer.ensure_set_up()
    assert peer.is_set_up()


def test_a_failed_setup_is_an_error_that_says_why(tmp_path):
    peer = TritonPeer(_scripts(tmp_path, "echo 'no network' >&2; exit 3"), tmp_path / "peer")
    with pytest.raises(PeerUnavailable, match=r"(?s)exit status 3.*no network"):
        peer.ensure_set_up()
    with pytest.raises(PeerUnavailable, match="setup.sh not found"):
        TritonPeer(tmp_path / "nowhere", tmp_path / "peer").ensure_set_up()


def test_the_benchmark_exits_non_zero_without_the_peer(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cores: None)  # leave pytest's own CPUs alone
    scripts = _scripts(tmp_path, "exit 1")
    status = python_backend_vs_triton.main(["--triton-scripts", str(scripts), "--triton-install", str(tmp_path / "p")])
    assert status == 2
    assert "Triton peer is unavailable" in capsys.readouterr().err


def test_a_peer_that_does_not_start_is_an_error_too(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cores: None)
    setup = 'mkdir -p "$TRITON_PEER/dist" && touch "$TRITON_PEER/dist/tritonserver" "$TRITON_PEER/site"'
    scripts = _scripts(tmp_path, setup)
    (scripts / "run.sh").write_text("echo 'libpython3.11.so: cannot open' >&2; exit 127\n")
    status = python_backend_vs_triton.main(["--triton-scripts", str(scripts), "--triton-install", str(tmp_path / "p")])
    assert status == 2
    err = capsys.readouterr().err
    assert "tritonserver did not start" in err and "libpython3.11.so: cannot open" in err


def test_the_run_sh_command_and_environment(tmp_path):
    peer = TritonPeer(tmp_path / "scripts", tmp_path / "peer")
    assert peer.command(1, 2, 3)[2:] == ["--http-port=1", "--grpc-port=2", "--metrics-port=3"]
    env = peer.env(tmp_path / "repo")
    assert env["MODEL_REPO"] == str(tmp_path / "repo") and env["TRITON_PEER"] == str(tmp_path / "peer")


def test_server_cpu_and_processes_include_descendants(tmp_path):
    child = "import subprocess; sum(range(5_000_000)); subprocess.run(['sleep', '30'])"  # busy, then a child
    process = subprocess.Popen([sys.executable, "-c", child], start_new_session=True)
    try:
        server = Server("parent", process, 0, tmp_path / "log")
        deadline = time.monotonic() + 10
        while len(server.process_ids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.process_ids()[0] == process.pid and len(server.process_ids()) == 2
        assert server.cpu_seconds() > 0
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the parent and its sleeping child: the session started here
        process.wait()


def test_the_grpc_floor_is_measured_only_when_asked_and_only_over_grpc():
    names = [
        (s.server, s.isolation)
        for s in python_backend_vs_triton.settings(python_backend_vs_triton.parse_args(["--grpc-floor"]))
    ]
    assert names == [("triton", "process"), ("modelgate", "thread"), ("modelgate", "process"), ("grpcio alone", "-")]
    plain = python_backend_vs_triton.settings(python_backend_vs_triton.parse_args([]))
    assert all(s.server != python_backend_vs_triton.GRPC_FLOOR for s in plain)
    http_only = python_backend_vs_triton.parse_args(["--grpc-floor", "--protocols", "http"])
    assert all(s.server != python_backend_vs_triton.GRPC_FLOOR for s in python_backend_vs_triton.settings(http_only))


def test_the_grpc_floor_answers_add_sub_right_and_says_what_it_is(tmp_path):
    from benchmarks.add_sub_requests import check_with_tritonclient_grpc
    from benchmarks.pinned_server import free_port, start_server, stop_server

    http_port, grpc_port = free_port(), free_port()
    command = [
        sys.executable,
        "benchmarks/bare_grpc_peer.py",
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
    ]
    server = start_server("grpc-floor", command, http_port, 0, 0, tmp_path)
    try:
        check_with_tritonclient_grpc(grpc_port)  # raises unless OUTPUT0/OUTPUT1 are the sum and difference
        assert python_backend_vs_triton._server_version(http_port).startswith("grpcio ")
    finally:
        stop_server(server)
    assert server.process.returncode == 0  # SIGTERM stops it cleanly
