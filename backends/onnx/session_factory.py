"""Execution providers for an instance, and the InferenceSession built with them.

KIND_GPU instances ask for the CUDAExecutionProvider on their device (with the CPU provider
after it for the nodes CUDA does not implement); KIND_CPU instances get the CPU provider
only. When the CUDA provider is missing from this onnxruntime build, or ONNX Runtime could
not start it and quietly fell back, the model's `gpu_fallback` parameter decides: refuse
(the default; the load fails with UnavailableError saying what is missing) or serve on CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime

from modelgate.backends.base import InstanceSpec
from modelgate.backends.onnx.session_config import SessionConfig
from modelgate.core.errors import UnavailableError

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def create_session(model_path: Path, spec: InstanceSpec, config: SessionConfig) -> onnxruntime.InferenceSession:
    """A session for one instance; raises UnavailableError when a GPU instance cannot get CUDA and may not fall back."""
    providers = _providers(spec, config)
    session = onnxruntime.InferenceSession(str(model_path), _session_options(config), providers=providers)
    if spec.kind == "GPU" and CUDA_PROVIDER not in session.get_providers():
        _refuse_or_warn(spec, config, f"ONNX Runtime could not start {CUDA_PROVIDER} (see its log above)")
    return session


def _providers(spec: InstanceSpec, config: SessionConfig) -> list:
    if spec.kind != "GPU":
        return [CPU_PROVIDER]
    available = onnxruntime.get_available_providers()
    if CUDA_PROVIDER in available:
        return [(CUDA_PROVIDER, {"device_id": spec.device_id}), CPU_PROVIDER]
    _refuse_or_warn(
        spec,
        config,
        f"this onnxruntime {onnxruntime.__version__} has no {CUDA_PROVIDER} (it has: {', '.join(available)})",
    )
    return [CPU_PROVIDER]


def _refuse_or_warn(spec: InstanceSpec, config: SessionConfig, problem: str) -> None:
    """Raise for gpu_fallback "refuse"; log a warning and let the instance run on the CPU for "cpu"."""
    where = f"model '{spec.model_name}' instance '{spec.instance_name}' is KIND_GPU (GPU {spec.device_id})"
    if config.falls_back_to_cpu:
        logger.warning("%s but %s; serving it on %s as gpu_fallback is 'cpu'", where, problem, CPU_PROVIDER)
        return
    raise UnavailableError(
        f"{where} and needs {CUDA_PROVIDER}, but {problem}. Install onnxruntime-gpu (the GPU build, in place of "
        "onnxruntime), use KIND_CPU, or set "
        'parameters { key: "gpu_fallback" value { string_value: "cpu" } } to serve it on the CPU'
    )


def _session_options(config: SessionConfig) -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = config.intra_op_thread_count
    options.inter_op_num_threads = config.inter_op_thread_count
    return options
