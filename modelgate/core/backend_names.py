"""Which backend a model config names: its `backend`, or else the backend that serves its Triton `platform`.

Kept below the backends so that a client (`modelgate size repository`) reads a repository as the server does.
"""

from __future__ import annotations

from tritonclient.grpc.model_config_pb2 import ModelConfig

PLATFORM_BACKENDS = {"pytorch_libtorch": "pytorch", "torch_export": "pytorch", "onnxruntime_onnx": "onnxruntime"}
# Backends whose KIND_AUTO instances go to a GPU where one is visible, as Triton's do.
GPU_BACKENDS = frozenset({"pytorch", "onnxruntime", "llm"})


def backend_name(config: ModelConfig) -> str:
    """The backend `config` names; "" when it names none known here (the server says what is allowed)."""
    return config.backend or PLATFORM_BACKENDS.get(config.platform, "")


def platforms_of(backend: str) -> tuple[str, ...]:
    return tuple(platform for platform, name in PLATFORM_BACKENDS.items() if name == backend)
