"""A client process for the CUDA shared-memory test: CUDA IPC handles only open in another process than the one
that made them, so the client runs apart from the server under test.

    python cuda_client.py HOST:PORT   prints JSON: {"sum": [...], "difference": [...]}

It allocates two device buffers with cudaMalloc, writes add_sub's inputs into the first, registers both with
the server over HTTP (tritonclient), infers with inputs and outputs in the regions and reads the outputs back.
"""

from __future__ import annotations

import base64
import ctypes
import json
import sys

import numpy as np
import torch
import tritonclient.http as httpclient

from modelgate.server.shared_memory import cuda_ipc

HOST_TO_DEVICE, DEVICE_TO_HOST = 1, 2


def main(url: str) -> None:
    torch.cuda.init()
    runtime = cuda_ipc._runtime()
    runtime.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
    runtime.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    runtime.cudaIpcGetMemHandle.argtypes = [ctypes.POINTER(cuda_ipc._IpcMemHandle), ctypes.c_void_p]
    runtime.cudaSetDevice(0)
    a = np.arange(4, dtype=np.float32)
    b = np.full(4, 10, dtype=np.float32)
    inputs_buffer, outputs_buffer = _malloc(runtime, 32), _malloc(runtime, 32)
    both = np.concatenate([a, b])
    runtime.cudaMemcpy(inputs_buffer, both.ctypes.data, 32, HOST_TO_DEVICE)
    client = httpclient.InferenceServerClient(url)
    client.register_cuda_shared_memory("gpu-in", _handle(runtime, inputs_buffer), 0, 32)
    client.register_cuda_shared_memory("gpu-out", _handle(runtime, outputs_buffer), 0, 32)
    tensors = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
    tensors[0].set_shared_memory("gpu-in", 16)
    tensors[1].set_shared_memory("gpu-in", 16, offset=16)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0"), httpclient.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("gpu-out", 16)
    outputs[1].set_shared_memory("gpu-out", 16, offset=16)
    client.infer("add_sub", tensors, outputs=outputs)
    result = np.empty(8, dtype=np.float32)
    runtime.cudaMemcpy(result.ctypes.data, outputs_buffer, 32, DEVICE_TO_HOST)
    status = client.get_cuda_shared_memory_status()
    client.unregister_cuda_shared_memory()
    print(json.dumps({"sum": result[:4].tolist(), "difference": result[4:].tolist(), "status": status}))


def _malloc(runtime, size: int) -> ctypes.c_void_p:
    pointer = ctypes.c_void_p()
    assert runtime.cudaMalloc(ctypes.byref(pointer), size) == 0
    return pointer


def _handle(runtime, pointer) -> str:
    handle = cuda_ipc._IpcMemHandle()
    assert runtime.cudaIpcGetMemHandle(ctypes.byref(handle), pointer) == 0
    return base64.b64encode(bytes(handle)).decode()


if __name__ == "__main__":
    main(sys.argv[1])
