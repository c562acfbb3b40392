"""The model runner's settings (RunnerConfig) and how each resolves against the device and the checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from modelgate.backends.llm.attention.torch_paged import TorchPagedAttention
from modelgate.backends.llm.models.model_config import DecoderConfig

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class RunnerConfig:
    device: str = "cpu"
    dtype: str = "auto"  # "auto": the checkpoint's dtype on a GPU, float32 on the CPU
    block_size: int = 16
    max_model_len: int = 2048
    num_kv_blocks: int | None = None  # None: from gpu_memory_utilization on a GPU
    gpu_memory_utilization: float = 0.9
    memory_budget_bytes: int | None = None  # all the process may hold on its GPU; None: gpu_memory_utilization
    show_progress: bool = True
    # "auto": "triton" (kernels/) on a CUDA device, "torch" (the plain-torch reference) elsewhere.
    # "triton" on the CPU runs the kernels under TRITON_INTERPRET=1 only: that is for tests.
    attention_backend: Literal["auto", "torch", "triton"] = "auto"
    # The triton backend's long fresh prefills through cuDNN (EngineConfig.cudnn_prefill_attention).
    cudnn_prefill_attention: bool = False
    # "fp8": attention and MLP linears as FP8 e4m3 weights with per-channel scales (quantized after a
    # bf16/fp32 checkpoint loads); an FP8 checkpoint (weight_scale tensors) always loads as FP8.
    quantization: Literal["none", "fp8"] = "none"
    # "fp8": float8_e4m3fn KV cache with per-(token, KV head) float32 scales; needs the triton attention backend.
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    # Batch sizes of the decode steps captured as CUDA graphs (backends/llm/cuda_graphs.py); used only on a CUDA
    # device with the triton attention backend. Empty: every step runs eagerly.
    cuda_graph_batch_sizes: tuple[int, ...] = ()
    # Token counts at which the other steps (prefills, chunks, mixed steps) are captured as piecewise CUDA graphs
    # (backends/llm/step_graphs.py); same conditions. Empty: those steps run eagerly.
    cuda_graph_token_counts: tuple[int, ...] = ()
    # The scheduler's limits: a step's tokens and sampled rows. On a GPU, a forward of this many tokens is run
    # once before the KV cache is sized, so that its activations' peak is kept free.
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 64


def resolve_attention_backend(name: str, device: torch.device) -> str:
    if name == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if name not in ("torch", "triton"):
        raise ValueError(f"attention_backend '{name}' is not supported; allowed: auto, torch, triton")
    return name


def make_attention(backend: str, model_config: DecoderConfig, device: torch.device, cudnn_prefill: bool = False):
    """The attention implementation every layer shares; the Triton one is imported only when chosen."""
    c = model_config
    if backend == "triton":
        from modelgate.backends.llm.attention.triton_paged import TritonPagedAttention

        attention = TritonPagedAttention(c.num_heads, c.num_kv_heads, c.head_dim, c.sliding_window, device)
        if cudnn_prefill:
            attention.use_cudnn_for_long_prefills()
        return attention
    return TorchPagedAttention(c.num_heads, c.num_kv_heads, c.head_dim, c.sliding_window)


def check_quantization(config: RunnerConfig, attention_backend: str) -> None:
    """ValueError unless the quantization settings are known and the FP8 KV cache has the triton backend."""
    if config.quantization not in ("none", "fp8"):
        raise ValueError(f"quantization '{config.quantization}' is not supported; allowed: none, fp8")
    if config.kv_cache_dtype not in ("auto", "fp8"):
        raise ValueError(f"kv_cache_dtype '{config.kv_cache_dtype}' is not supported; allowed: auto, fp8")
    if config.kv_cache_dtype == "fp8" and attention_backend != "triton":
        raise ValueError(
            f"kv_cache_dtype 'fp8' needs attention_backend 'triton' (a CUDA device, or TRITON_INTERPRET=1 on the "
            f"CPU for tests); the resolved attention backend is '{attention_backend}'; use kv_cache_dtype 'auto'"
        )


def resolve_dtype(name: str, checkpoint_dtype: str, device: str) -> torch.dtype:
    if name == "auto":
        if device == "cpu":
            return torch.float32
        return _DTYPES.get(checkpoint_dtype, torch.bfloat16)
    if name not in _DTYPES:
        raise ValueError(f"dtype '{name}' is not supported; allowed: auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]
