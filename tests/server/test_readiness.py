"""Health as Kubernetes and Triton mean it: live while models load, ready once every model asked to load serves
(`--strict-readiness`, Triton's default) or once the server serves (`strict_readiness=False`)."""

import asyncio
import threading
import time
import urllib.error
import urllib.request

import tritonclient.grpc as grpcclient

from modelgate.server.runtime import ModelgateServer
from modelgate.server.settings import ServerSettings
from tests.server_harness import write_model

CONFIG = """
name: "{name}"
backend: "python"
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
"""

# initialize waits until the test lets it go: a long load.
SLOW_LOAD_MODEL = """
import pathlib
import time

class TritonPythonModel:
    def initialize(self, args):
        gate = pathlib.Path(args["model_repository"]) / "go"
        while not gate.exists():
            time.sleep(0.02)

    def execute(self, requests):
        return []
"""

BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("cannot start")
"""


def _status(port: int, path: str) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
    except urllib.error.HTTPError as error:
        return error.code


def test_live_while_models_load_ready_when_they_have(tmp_path):
    model_dir = write_model(tmp_path, "slow", CONFIG.format(name="slow"), SLOW_LOAD_MODEL)
    settings = ServerSettings(
        model_repository=[tmp_path], http_address="127.0.0.1", http_port=0, grpc_address="127.0.0.1", grpc_port=0,
        metrics_port=0, exit_timeout_secs=10,
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = ModelgateServer(settings)
    started = asyncio.run_coroutine_threadsafe(server.start(), loop)
    try:
        deadline = time.monotonic() + 60
        while server.http_port is None or server.grpc_port is None:
            assert time.monotonic() < deadline and not started.done(), "the ports did not open before the load"
            time.sleep(0.02)
        assert _status(server.http_port, "/v2/health/live") == 200  # a liveness probe passes during the load
        assert _status(server.http_port, "/v2/health/ready") == 400
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        assert grpc.is_server_live() and not grpc.is_server_ready()
        (model_dir / "go").touch()
        started.result(timeout=60)
        assert _status(server.http_port, "/v2/health/ready") == 200
        assert grpc.is_server_ready()
        grpc.close()
    finally:
        (model_dir / "go").touch()
        started.result(timeout=60)
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)


def test_strict_readiness_counts_models_that_failed_until_they_are_unloaded(tmp_path, serve):
    write_model(tmp_path, "broken", CONFIG.format(name="broken"), BROKEN_MODEL)
    write_model(tmp_path, "good", CONFIG.format(name="good"), SLOW_LOAD_MODEL)
    (tmp_path / "good" / "go").touch()
    _, strict = serve([tmp_path], model_control_mode="explicit", load_model=["*"])
    assert strict.is_server_live() and not strict.is_server_ready()
    strict.unload_model("broken")  # no longer asked to serve: it no longer counts
    assert strict.is_server_ready()
    _, lenient = serve([tmp_path], model_control_mode="explicit", load_model=["*"], strict_readiness=False)
    assert lenient.is_server_ready()
    assert not lenient.is_model_ready("broken")


def test_a_model_whose_process_stopped_makes_the_server_unready_until_it_is_back(tmp_path, serve):
    write_model(tmp_path, "good", CONFIG.format(name="good"), SLOW_LOAD_MODEL)
    (tmp_path / "good" / "go").touch()
    running, client = serve([tmp_path])
    assert client.is_server_ready()
    # What a python model's stub that died reports (its restart reports None): tested end to end for the model's
    # own readiness in tests/backends/python/test_process_isolation.py.
    manager = running.server.manager
    running.loop.call_soon_threadsafe(manager._set_instance_health, manager._entries["good"], 1, "good_0", "died")
    deadline = time.monotonic() + 30
    while client.is_server_ready():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    running.loop.call_soon_threadsafe(manager._set_instance_health, manager._entries["good"], 1, "good_0", None)
    while not client.is_server_ready():
        assert time.monotonic() < deadline
        time.sleep(0.02)
