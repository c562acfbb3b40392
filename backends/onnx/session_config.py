"""The model's `parameters` that steer its ONNX Runtime sessions.

    parameters { key: "intra_op_thread_count" value { string_value: "2" } }   # Triton's name; 0: ORT decides
    parameters { key: "inter_op_thread_count" value { string_value: "1" } }   # Triton's name; 0: ORT decides
    parameters { key: "gpu_fallback" value { string_value: "refuse" } }       # or "cpu"

`gpu_fallback` says what a KIND_GPU instance does when this onnxruntime build has no
CUDAExecutionProvider (the CPU-only `onnxruntime` wheel; `onnxruntime-gpu` has it) or the
provider cannot start: "refuse" (the default) fails the load with a message naming the
missing provider, so a GPU deployment never silently runs on the CPU; "cpu" logs a
warning and serves on the CPUExecutionProvider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError

GPU_FALLBACK_CHOICES = ("refuse", "cpu")
_THREAD_PARAMETERS = ("intra_op_thread_count", "inter_op_thread_count")


@dataclass(frozen=True)
class SessionConfig:
    intra_op_thread_count: int = 0  # 0: ONNX Runtime's default (one per physical core)
    inter_op_thread_count: int = 0
    gpu_fallback: str = "refuse"

    @property
    def falls_back_to_cpu(self) -> bool:
        return self.gpu_fallback == "cpu"


def session_config_from(config: ModelConfig, source: str) -> SessionConfig:
    """Read and check the parameters; ConfigError names the parameter and what is allowed."""
    parameters = config.parameters
    counts = {name: _thread_count(parameters, name, source) for name in _THREAD_PARAMETERS}
    fallback = parameters["gpu_fallback"].string_value.strip() if "gpu_fallback" in parameters else "refuse"
    if fallback not in GPU_FALLBACK_CHOICES:
        raise ConfigError(
            source, "parameters.gpu_fallback", f"is '{fallback}'; allowed: {', '.join(GPU_FALLBACK_CHOICES)}"
        )
    return SessionConfig(counts["intra_op_thread_count"], counts["inter_op_thread_count"], fallback)


def _thread_count(parameters, name: str, source: str) -> int:
    if name not in parameters:
        return 0
    text = parameters[name].string_value.strip()
    if not re.fullmatch(r"[0-9]+", text):
        raise ConfigError(
            source, f"parameters.{name}", f"is '{text}'; allowed: a whole number >= 0 (0: ONNX Runtime decides)"
        )
    return int(text)
