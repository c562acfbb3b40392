"""On a GPU: the ledger's figures against NVML's per-process figures (run this file in a pytest process of its
own: a process that used CUDA before the server loads holds memory the ledger never saw)."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.server_harness import start_server

pytestmark = pytest.mark.gpu

INTERMEDIATE_BYTES = 1 << 30  # what the model's forward allocates at its largest batch


def _nvml_process_bytes(pid: int) -> int:
    import pynvml

    from modelgate.core.nvml import nvml_gpus

    processes = pynvml.nvmlDeviceGetComputeRunningProcesses(nvml_gpus()[0].handle)
    return sum(p.usedGpuMemory or 0 for p in processes if p.pid == pid)


def _write_big_activation_model(repository):
    import torch
    from torch import nn

    class Widen(nn.Module):
        def forward(self, x):  # x: [batch, 1024] -> a [batch, 1024, 4096] fp32 intermediate (1 GiB at batch 64)
            return (x.unsqueeze(-1) * torch.ones(4096, device=x.device)).sum(dim=-1)

    folder = repository / "widen" / "1"
    folder.mkdir(parents=True)
    torch.jit.script(Widen()).save(str(folder / "model.pt"))
    (repository / "widen" / "config.pbtxt").write_text(
        'name: "widen"\nbackend: "pytorch"\nmax_batch_size: 64\n'
        'input { name: "INPUT__0" data_type: TYPE_FP32 dims: [1024] }\n'
        'output { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [1024] }\n'
        "instance_group { kind: KIND_GPU count: 1 }\n"
    )


def test_the_ledger_matches_nvml_for_in_process_models_and_counts_their_activations(tmp_path):
    _write_big_activation_model(tmp_path)
    server = start_server([tmp_path])
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        [usage] = client.get_inference_statistics("widen")["model_stats"][0]["memory_usage"]
        assert usage["type"] == "GPU" and usage["byte_size"] >= INTERMEDIATE_BYTES  # the probe ran at batch 64
        x = httpclient.InferInput("INPUT__0", [64, 1024], "FP32")
        x.set_data_from_numpy(np.ones((64, 1024), dtype=np.float32))
        assert client.infer("widen", [x]).as_numpy("OUTPUT__0")[0, 0] == 4096.0
        nvml = _nvml_process_bytes(os.getpid())
        assert abs(usage["byte_size"] - nvml) <= 0.05 * nvml, (usage, nvml)
    finally:
        client.close()
        server.stop()


def test_an_llm_fills_the_budget_the_ledger_gives_it(tmp_path):
    from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint

    make_tiny_checkpoint(tmp_path / "tiny" / "1")
    (tmp_path / "tiny" / "config.pbtxt").write_text(
        'name: "tiny"\nbackend: "llm"\n'
        'parameters { key: "max_model_len" value { string_value: "128" } }\n'
        'parameters { key: "show_progress" value { string_value: "false" } }\n'
    )
    server = start_server([tmp_path], gpu_memory_limit="6GiB")
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        [usage] = client.get_inference_statistics("tiny")["model_stats"][0]["memory_usage"]
        budget = int(6 * 2**30 * 0.9)  # all of the limit but gpu_memory_utilization's headroom
        assert abs(usage["byte_size"] - budget) <= 0.05 * budget, usage
        [engine] = [p for p in multiprocessing.active_children() if p.name == "modelgate-llm-engine"]
        nvml = _nvml_process_bytes(engine.pid)
        assert abs(usage["byte_size"] - nvml) <= 0.05 * nvml, (usage, nvml)
    finally:
        client.close()
        server.stop()
