"""CUDA shared memory on a GPU: a client process's device buffers as add_sub's inputs and outputs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

CLIENT = Path(__file__).with_name("cuda_client.py")


def test_inputs_and_outputs_in_cuda_regions(shm_server):
    done = subprocess.run(
        [sys.executable, str(CLIENT), shm_server.http_url], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sum"] == [10.0, 11.0, 12.0, 13.0]
    assert result["difference"] == [-10.0, -9.0, -8.0, -7.0]
    assert {r["name"]: r["byte_size"] for r in result["status"]} == {"gpu-in": 32, "gpu-out": 32}


def test_a_region_larger_than_its_allocation_is_refused(shm_server):
    """The driver says how large the allocation behind a handle is; a larger region would read past it."""
    script = (
        "import base64, ctypes, sys, torch, tritonclient.http as h\n"
        "from modelgate.server.shared_memory import cuda_ipc\n"
        "torch.cuda.init(); rt = cuda_ipc._runtime(); p = ctypes.c_void_p()\n"
        "rt.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]\n"
        "rt.cudaIpcGetMemHandle.argtypes = [ctypes.POINTER(cuda_ipc._IpcMemHandle), ctypes.c_void_p]\n"
        "assert rt.cudaMalloc(ctypes.byref(p), 4096) == 0\n"
        "handle = cuda_ipc._IpcMemHandle(); assert rt.cudaIpcGetMemHandle(ctypes.byref(handle), p) == 0\n"
        "c = h.InferenceServerClient(sys.argv[1])\n"
        "try:\n"
        "    c.register_cuda_shared_memory('too-big', base64.b64encode(bytes(handle)).decode(), 0, 1 << 40)\n"
        "except Exception as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, shm_server.http_url], capture_output=True, text=True, timeout=120, check=True
    )
    assert "larger than the allocation" in done.stdout
