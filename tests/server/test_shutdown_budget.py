"""SIGTERM ends `modelgate serve` within one budget, --exit-timeout-secs, even with a model stuck in execute."""

import signal
import subprocess
import sys
import threading
import time
import urllib.request

from benchmarks.pinned_server import free_port
from tests.server_harness import write_model

CONFIG = """
name: "{name}"
backend: "python"
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
parameters {{ key: "isolation" value {{ string_value: "{isolation}" }} }}
"""

# Marks that it started executing, then never returns.
STUCK_MODEL = """
import pathlib
import time

class TritonPythonModel:
    def initialize(self, args):
        self.marker = pathlib.Path(args["model_repository"]) / "executing"

    def execute(self, requests):
        self.marker.touch()
        while True:
            time.sleep(1)
"""

BODY = b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [1]}]}'


def _serve(repository, *, exit_timeout_s: float) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "modelgate", "serve", "--model-repository", str(repository)]
    command += ["--http-port", str(port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    command += ["--exit-timeout-secs", str(exit_timeout_s)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5)
            return server, port
        except OSError:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)


def _infer_in_background(port: int, model: str) -> None:
    def call():
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{model}/infer", data=BODY)
        try:
            urllib.request.urlopen(request, timeout=120)
        except OSError:
            pass  # the server goes away under it

    threading.Thread(target=call, daemon=True).start()


def _stop(server: subprocess.Popen) -> tuple[int, str]:
    server.send_signal(signal.SIGTERM)
    try:
        output, _ = server.communicate(timeout=90)  # a liveness bound, far above the budget
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError("SIGTERM did not end the server") from None
    return server.returncode, output


def test_a_model_stuck_in_execute_does_not_keep_the_server_alive(tmp_path):
    for isolation in ("thread", "process"):
        write_model(
            tmp_path, f"stuck_{isolation}", CONFIG.format(name=f"stuck_{isolation}", isolation=isolation), STUCK_MODEL
        )
    server, port = _serve(tmp_path, exit_timeout_s=2)
    for model in ("stuck_thread", "stuck_process"):
        _infer_in_background(port, model)
    deadline = time.monotonic() + 60
    markers = [tmp_path / model / "executing" for model in ("stuck_thread", "stuck_process")]
    while not all(marker.exists() for marker in markers):
        assert time.monotonic() < deadline, "the models never started executing"
        time.sleep(0.05)
    code, output = _stop(server)
    assert code == 1, output
    assert "exiting with work unfinished: --exit-timeout-secs ran out" in output


def test_an_idle_server_stops_cleanly(tmp_path):
    write_model(tmp_path, "idle", CONFIG.format(name="idle", isolation="process"), STUCK_MODEL)
    server, _ = _serve(tmp_path, exit_timeout_s=10)
    code, output = _stop(server)
    assert code == 0, output
    assert "ran out" not in output
