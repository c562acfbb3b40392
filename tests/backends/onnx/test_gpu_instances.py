"""KIND_GPU instances on a machine without the CUDA provider: refused by default, on the CPU when allowed.

The plain `onnxruntime` wheel has no CUDAExecutionProvider; the first test makes the installed build
look like it either way. The second makes the provider look available (as onnxruntime-gpu on a machine
whose CUDA cannot start) so that the session is really asked for CUDA and ONNX Runtime falls back on
its own. The gpu test runs a KIND_GPU instance on CUDA for real.
"""

import numpy as np
import onnxruntime
import pytest
import tritonclient.http as httpclient

from tests.backends.onnx.io_helpers import onnx_instances
from tests.backends.onnx.onnx_models import add_model

GPU_CONFIG = """
    platform: "onnxruntime_onnx"
    instance_group [ { count: 1 kind: KIND_GPU gpus: [ 1 ] } ]
"""
FALLBACK = 'parameters { key: "gpu_fallback" value { string_value: "cpu" } }'


def gpu_repository(tmp_path):
    add_model(tmp_path, "gpu_refuse", "simple", GPU_CONFIG)
    add_model(tmp_path, "gpu_fallback", "simple", GPU_CONFIG + FALLBACK)
    add_model(tmp_path, "cpu_model", "simple")
    return tmp_path


def index_rows(running) -> dict:
    client = httpclient.InferenceServerClient(running.http_url)
    try:
        return {row["name"]: row for row in client.get_model_repository_index()}
    finally:
        client.close()


def infer_ones(running, name: str) -> np.ndarray:
    client = httpclient.InferenceServerClient(running.http_url)
    try:
        tensor = httpclient.InferInput("INPUT", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
        return client.infer(name, [tensor]).as_numpy("OUTPUT")
    finally:
        client.close()


@pytest.fixture
def asked_providers(monkeypatch):
    """The `providers` argument of every InferenceSession created while the test runs."""
    asked = []
    real_session = onnxruntime.InferenceSession

    class RecordingSession(real_session):
        def __init__(self, path, sess_options=None, providers=None, **kwargs):
            asked.append(providers)
            super().__init__(path, sess_options, providers=providers, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", RecordingSession)
    return asked


def test_without_the_cuda_provider_gpu_instances_refuse_unless_told_to_fall_back(tmp_path, make_server, monkeypatch):
    as_if_plain_build = ["CPUExecutionProvider"]  # what the plain wheel has, whichever build is installed
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: as_if_plain_build)
    running = make_server([gpu_repository(tmp_path)])
    rows = index_rows(running)
    assert rows["gpu_refuse"]["state"] == "UNAVAILABLE"
    reason = rows["gpu_refuse"]["reason"]
    for fragment in (
        "KIND_GPU (GPU 1)",
        "needs CUDAExecutionProvider",
        "has no CUDAExecutionProvider",
        "onnxruntime-gpu",
        "gpu_fallback",
    ):
        assert fragment in reason
    assert rows["gpu_fallback"]["state"] == "READY" and rows["cpu_model"]["state"] == "READY"
    (instance,) = onnx_instances(running, "gpu_fallback")
    assert instance.providers == ["CPUExecutionProvider"]
    assert infer_ones(running, "gpu_fallback").shape == (1, 4)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_gpu_instances_ask_for_cuda_on_their_device(tmp_path, make_server, monkeypatch, asked_providers):
    as_if_gpu_build = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: as_if_gpu_build)
    running = make_server([gpu_repository(tmp_path)])
    cuda_asks = [p for p in asked_providers if p and p[0] != "CPUExecutionProvider"]
    assert cuda_asks == [[("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]] * 2
    assert ["CPUExecutionProvider"] in asked_providers  # cpu_model's instance
    rows = index_rows(running)
    assert rows["gpu_refuse"]["state"] == "UNAVAILABLE"
    assert "could not start CUDAExecutionProvider" in rows["gpu_refuse"]["reason"]
    (instance,) = onnx_instances(running, "gpu_fallback")
    assert instance.providers == ["CPUExecutionProvider"]
    assert infer_ones(running, "gpu_fallback").shape == (1, 4)


@pytest.mark.gpu
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in onnxruntime.get_available_providers(), reason="needs onnxruntime-gpu"
)
def test_gpu_instances_run_on_cuda(tmp_path, make_server):
    add_model(tmp_path, "on_gpu", "simple", GPU_CONFIG.replace("gpus: [ 1 ]", "gpus: [ 0 ]"))
    running = make_server([tmp_path])
    (instance,) = onnx_instances(running, "on_gpu")
    assert instance.providers[0] == "CUDAExecutionProvider"
    assert infer_ones(running, "on_gpu").shape == (1, 4)
