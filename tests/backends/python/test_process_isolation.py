"""Python models in processes of their own: a crash, a hang or a blow-up costs that model only.

A `fragile` model does what its input says (exit, segfault, loop, allocate, be killed); a `steady` model keeps
answering. Each fault fails the request that caused it with an error naming the model, the other model answers
throughout (over the other protocol), and the fragile model answers again once its process was restarted.
"""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server_harness import write_model

FRAGILE_CONFIG = """
name: "fragile"
backend: "python"
input [ { name: "MODE" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "PID" data_type: TYPE_INT64 dims: [ 1 ] } ]
parameters { key: "execute_timeout_seconds" value { string_value: "2" } }
"""

FRAGILE_MODEL = """
import ctypes, os, resource, signal, time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        # A ceiling on this process's memory: a blow-up meets it instead of the machine's limit.
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    def execute(self, requests):
        responses = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
            if mode == "exit":
                os._exit(1)
            if mode == "segfault":
                ctypes.string_at(0)
            if mode == "loop":
                while True:
                    time.sleep(0.01)
            if mode == "kill":  # what the kernel's OOM killer does
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "allocate":
                hoard = np.ones(8 << 30, dtype=np.uint8)
            pid = np.array([os.getpid()], dtype=np.int64)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("PID", pid)]))
        return responses
"""

STEADY_CONFIG = """
name: "steady"
backend: "python"
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""

STEADY_MODEL = """
import os
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() * 2)])
                for r in requests]
"""


@pytest.fixture
def fragile_server(tmp_path, make_server):
    write_model(tmp_path, "fragile", FRAGILE_CONFIG, FRAGILE_MODEL)
    write_model(tmp_path, "steady", STEADY_CONFIG, STEADY_MODEL)
    running = make_server([tmp_path])
    http = httpclient.InferenceServerClient(running.http_url, network_timeout=60)
    grpc = grpcclient.InferenceServerClient(running.grpc_url)
    yield running, http, grpc
    http.close()
    grpc.close()


def _fragile(client, module, mode: str) -> int:
    tensor = module.InferInput("MODE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([mode.encode()], dtype=np.object_))
    return int(client.infer("fragile", [tensor]).as_numpy("PID")[0])


def _steady(client, module) -> None:
    tensor = module.InferInput("X", [3], "FP32")
    tensor.set_data_from_numpy(np.array([1, 2, 3], dtype=np.float32))
    np.testing.assert_array_equal(client.infer("steady", [tensor]).as_numpy("Y"), [2, 4, 6])


def _answers_again(client, module, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _fragile(client, module, "pid")
        except InferenceServerException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize(
    ("mode", "protocol", "says"),
    [
        ("exit", "http", "exited with code 1"),
        ("segfault", "grpc", "killed by SIGSEGV"),
        ("kill", "http", "killed by SIGKILL"),
        ("loop", "grpc", "ran past execute_timeout_seconds=2"),
    ],
)
def test_a_fault_costs_only_its_own_model(fragile_server, mode, protocol, says):
    running, http, grpc = fragile_server
    client, module = (http, httpclient) if protocol == "http" else (grpc, grpcclient)
    other, other_module = (grpc, grpcclient) if protocol == "http" else (http, httpclient)
    before = _fragile(client, module, "pid")
    with pytest.raises(InferenceServerException) as failure:
        _fragile(client, module, mode)
    assert "fragile" in failure.value.message() and says in failure.value.message()
    _steady(other, other_module)
    _steady(client, module)
    after = _answers_again(client, module)
    assert after != before  # a new process
    _steady(other, other_module)
    assert _restarts(running) >= 1


def test_a_memory_blow_up_fails_that_request_only(fragile_server):
    running, http, grpc = fragile_server
    before = _fragile(http, httpclient, "pid")
    with pytest.raises(InferenceServerException, match="MemoryError"):
        _fragile(http, httpclient, "allocate")
    _steady(grpc, grpcclient)
    assert _fragile(grpc, grpcclient, "pid") == before  # the process survived it


def test_each_instance_is_a_process_of_its_own_apart_from_the_server(fragile_server):
    running, http, grpc = fragile_server
    pid = _fragile(http, httpclient, "pid")
    assert pid != os.getpid()
    with open(f"/proc/{pid}/stat") as stat:  # started by the server (here, the test process), not forked elsewhere
        assert int(stat.read().split(") ", 1)[1].split()[1]) == os.getpid()


def _restarts(running) -> float:
    import urllib.request

    text = urllib.request.urlopen(running.metrics_url, timeout=30).read().decode()
    for line in text.splitlines():
        if line.startswith("modelgate_python_stub_restarts_total{") and 'model="fragile"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no modelgate_python_stub_restarts_total for fragile")


SERVER_IN_A_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from modelgate.backends.python import shm_tensors
    from tests.server_harness import start_server
    if len(sys.argv) > 2:  # the stubs' shared-memory folders go there, apart from other servers' in /dev/shm
        shm_tensors._SHM_ROOT = Path(sys.argv[2])
    running = start_server([sys.argv[1]])
    print("READY", flush=True)
    time.sleep(600)
    """
)

PID_FILE_MODEL = """
import os
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        with open(os.path.join(args["model_repository"], "stub.pid"), "w") as f:
            f.write(str(os.getpid()))

    def execute(self, requests):
        return []
"""


def test_a_stub_never_outlives_the_server(tmp_path):
    model_dir = write_model(tmp_path, "orphan", STEADY_CONFIG.replace("steady", "orphan"), PID_FILE_MODEL)
    # This server's own shared-memory root: /dev/shm also holds the folders of servers that other tests run at once.
    shm_root = Path(tempfile.mkdtemp(prefix="modelgate-test-shm-", dir="/dev/shm"))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_IN_A_CHILD, str(tmp_path), str(shm_root)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        assert server.stdout.readline().strip() == "READY"
        stub_pid = int((model_dir / "stub.pid").read_text())
        assert _is_running(stub_pid)
        assert list(shm_root.glob("modelgate-stub-*"))  # the stub's folder, made in this server's root
    finally:
        server.send_signal(signal.SIGKILL)  # no shutdown: the stub must notice on its own
        server.wait()
    deadline = time.monotonic() + 30
    while _is_running(stub_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _is_running(stub_pid)
    assert not list(shm_root.glob("modelgate-stub-*"))  # the stub removed its folder
    shm_root.rmdir()


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose: its parent (the killed server) is not there to reap it.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1].split()[0] != "Z"


def test_isolation_is_checked_at_load(tmp_path, make_server):
    def config(name: str) -> str:
        return STEADY_CONFIG.replace('name: "steady"', f'name: "{name}"')

    for name, parameters in [
        ("odd_isolation", 'parameters { key: "isolation" value { string_value: "container" } }'),
        (
            "thread_timeout",
            'parameters { key: "isolation" value { string_value: "thread" } }\n'
            'parameters { key: "execute_timeout_seconds" value { string_value: "1" } }',
        ),
        ("bad_timeout", 'parameters { key: "execute_timeout_seconds" value { string_value: "soon" } }'),
    ]:
        write_model(tmp_path, name, config(name) + parameters, STEADY_MODEL)
    write_model(
        tmp_path,
        "in_thread",
        config("in_thread") + 'parameters { key: "isolation" value { string_value: "thread" } }',
        STEADY_MODEL.replace("* 2", "* 0 + os.getpid()"),
    )
    running = make_server([tmp_path])
    http = httpclient.InferenceServerClient(running.http_url)
    reasons = {row["name"]: row.get("reason", "") for row in http.get_model_repository_index()}
    assert "parameters.isolation" in reasons["odd_isolation"] and "allowed: process, thread" in reasons["odd_isolation"]
    assert "needs isolation 'process'" in reasons["thread_timeout"]
    assert "execute_timeout_seconds" in reasons["bad_timeout"]
    tensor = httpclient.InferInput("X", [1], "FP32")
    tensor.set_data_from_numpy(np.array([0], dtype=np.float32))
    assert http.infer("in_thread", [tensor]).as_numpy("Y")[0] == np.float32(os.getpid())  # ran in the server
    http.close()


CRASHES_ON_IMPORT_MODEL = """
import ctypes
ctypes.string_at(0)  # a model file whose import crashes the interpreter

class TritonPythonModel:
    pass
"""


def test_a_model_file_that_crashes_on_import_fails_only_its_own_load(tmp_path, make_server):
    write_model(tmp_path, "crashes_on_import", None, CRASHES_ON_IMPORT_MODEL)  # no config: auto-completion imports it
    write_model(tmp_path, "steady", STEADY_CONFIG, STEADY_MODEL)
    running = make_server([tmp_path])
    http = httpclient.InferenceServerClient(running.http_url)
    reasons = {row["name"]: (row["state"], row.get("reason", "")) for row in http.get_model_repository_index()}
    assert reasons["crashes_on_import"][0] == "UNAVAILABLE"
    assert "killed by SIGSEGV" in reasons["crashes_on_import"][1]
    _steady(http, httpclient)
    http.close()


COMES_BACK_WHEN_ALLOWED_MODEL = """
import os
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        folder = args["model_repository"]
        if os.path.exists(os.path.join(folder, "crashed")) and not os.path.exists(os.path.join(folder, "allowed")):
            raise RuntimeError("not allowed to start again yet")

    def execute(self, requests):
        open(os.path.join(os.path.dirname(__file__), "..", "crashed"), "w").close()
        os._exit(3)
"""


def test_the_model_is_unavailable_until_its_process_is_back(tmp_path, make_server):
    model_dir = write_model(
        tmp_path, "phoenix", STEADY_CONFIG.replace("steady", "phoenix"), COMES_BACK_WHEN_ALLOWED_MODEL
    )
    running = make_server([tmp_path])
    http = httpclient.InferenceServerClient(running.http_url)
    assert http.is_model_ready("phoenix")
    tensor = httpclient.InferInput("X", [1], "FP32")
    tensor.set_data_from_numpy(np.array([1], dtype=np.float32))
    with pytest.raises(InferenceServerException, match="exited with code 3"):
        http.infer("phoenix", [tensor])
    _wait(lambda: _state(http, "phoenix")[0] == "UNAVAILABLE")  # its restarts fail until allowed
    assert "exited with code 3" in _state(http, "phoenix")[1]
    assert not http.is_model_ready("phoenix")
    with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
        http.infer("phoenix", [tensor])
    (model_dir / "allowed").touch()
    _wait(lambda: _state(http, "phoenix")[0] == "READY")
    assert http.is_model_ready("phoenix")
    # Several failed tries, one restart that took: the statistics count instances that came back.
    (stats,) = http.get_inference_statistics("phoenix")["model_stats"]
    assert stats["instance_restarts"] == 1
    grpc = grpcclient.InferenceServerClient(running.grpc_url)
    (grpc_stats,) = grpc.get_inference_statistics("phoenix", as_json=True)["model_stats"]  # Triton's fields only
    assert grpc_stats["name"] == "phoenix" and "instance_restarts" not in grpc_stats
    grpc.close()
    http.close()


def _state(client, name: str) -> tuple[str, str]:
    (row,) = [r for r in client.get_model_repository_index() if r["name"] == name]
    return row["state"], row.get("reason", "")


def _wait(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


DOUBLER_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            x *= 2  # in place: a model may change its inputs, as in Triton
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]))
        return responses
"""


def test_large_tensors_cross_through_shared_memory_and_leave_nothing_behind(tmp_path, make_server, monkeypatch):
    from modelgate.backends.python import shm_tensors

    used = []
    for name in ("read", "write"):
        original = getattr(shm_tensors, name)
        monkeypatch.setattr(shm_tensors, name, lambda *a, _f=original, _n=name, **k: used.append(_n) or _f(*a, **k))
    write_model(tmp_path, "doubler", STEADY_CONFIG.replace("steady", "doubler"), DOUBLER_MODEL)
    running = make_server([tmp_path])
    client = grpcclient.InferenceServerClient(running.grpc_url)
    folders = list(Path("/dev/shm").glob("modelgate-stub-*"))
    assert folders, "the stub got no shared-memory folder"
    x = np.random.default_rng(0).random(9 << 20, dtype=np.float32)  # 36 MiB: above shm_tensors.SHM_MIN_BYTES
    tensor = grpcclient.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("doubler", [tensor]).as_numpy("Y"), x * 2)
    assert used == ["write", "read"]  # the server wrote the input there and read the output from there
    assert [f for folder in folders for f in folder.glob("*.tensor")] == []  # read once, unlinked
    client.close()
