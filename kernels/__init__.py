"""Triton kernels of the LLM engine's GPU fast path, one op per module, each with a plain-torch reference.

- `fp8_quant`: FP8 (e4m3) row quantization: dynamic per-token activation scales (`quantize_per_token`),
  per-output-channel weight scales at load (`quantize_weight_per_channel`), FP8 checkpoints with their
  `weight_scale` (`fp8_weight_from_checkpoint`). Also the shared helpers the other kernels use
  (`check_launchable`, `is_interpreted`, `to_e4m3`).
- `fp8_gemm`: W8A8 GEMM with per-token x per-channel scales, bf16 out (`fp8_linear`,
  `fp8_linear_from_activations`), tiles chosen per M bucket (decode / mid / prefill) from one explicit table.

Every launcher checks shapes, dtypes, strides and devices and raises ValueError with what was wrong. Kernels
run on CUDA, or on CPU tensors when TRITON_INTERPRET=1 was set before the import (the kernel tests do
this); without triton installed (off Linux x86_64) the modules still import and the `*_reference` functions
work. Benchmarks against library peers live in benchmarks/ (benchmarks/fp8_gemm.py).
"""
