"""Attention over the paged KV cache with the Triton kernels in kernels/: the GPU implementation.

Same contract as `TorchPagedAttention.forward` (the reference it is tested against): write the step's K/V
into the cache (`kernels.reshape_and_cache`; with a `rotation`, `kernels.rotary_reshape_and_cache`, which also
applies the rotary embedding to q and k on the way, one launch instead of two), then
- a decode-only step (one query per sequence) runs `kernels.paged_decode_attention` (split-KV when the
  batch alone would leave SMs idle);
- any other step runs `kernels.prefill_attention` once for every sequence: fresh prefills, chunks over a
  cached prefix and the one-token decodes of a mixed step alike.
GQA (query head h reads KV head h // (num_heads // num_kv_heads)) and the sliding window (a query at position
p sees keys at positions > p - window) are handled inside the kernels.

The kernels need CUDA tensors, or CPU tensors under TRITON_INTERPRET=1 (set before kernels/ is imported):
the interpreter path exists for tests only, it is orders of magnitude slower than the torch reference.

FP8 KV cache: the kernels read float8_e4m3fn caches with per-(token, KV head) scales
(kernels/reshape_and_cache.py); `kv_scales` is None for bf16/fp16/fp32 caches.

Nothing here synchronizes with the GPU, so a decode step can be captured in a CUDA graph
(backends/llm/cuda_graphs.py): the metadata then carries a fixed decode split and padded rows (slot -1,
context length 0).
"""

from __future__ import annotations

import torch

from modelgate.backends.llm.attention.metadata import AttentionMetadata
from modelgate.backends.llm.models.rotary import Rotation
from modelgate.kernels.fp8_quant import HAS_TRITON, is_interpreted
from modelgate.kernels.paged_decode_attention import paged_decode_attention
from modelgate.kernels.prefill_attention import _prefill_attention_kernel, prefill_attention
from modelgate.kernels.reshape_and_cache import reshape_and_cache
from modelgate.kernels.rotary_reshape_and_cache import rotary_reshape_and_cache


class TritonPagedAttention:
    # Whether the model may hand the rotary embedding to forward (`rotation`) instead of applying it first;
    # set False on an instance for the unfused path (two launches), e.g. to compare the two.
    fuses_rotary: bool = True

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        sliding_window: int | None = None,
        device: torch.device | str = "cuda",
    ):
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        check_runnable(torch.device(device))
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.sliding_window = sliding_window

    def forward(
        self,
        q: torch.Tensor,  # [num_tokens, num_heads, head_dim]
        k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        v: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim], q's dtype
        metadata: AttentionMetadata,
        kv_scales: torch.Tensor | None = None,  # [2, num_blocks, block_size, num_kv_heads] float32, FP8 cache only
        rotation: Rotation | None = None,
    ) -> torch.Tensor:  # [num_tokens, num_heads, head_dim]
        """Attention of the step's queries; q and k are rotated already, or by the KV write when `rotation` is
        given: q is then rotated in place, k only in the cache (attention reads K from there, nothing else
        reads k), with the bits of rotary_embedding followed by reshape_and_cache."""
        if rotation is None:
            reshape_and_cache(k, v, kv_cache, metadata.slot_mapping, kv_scales)
        else:
            rotary_reshape_and_cache(
                q, k, v, kv_cache, metadata.slot_mapping, rotation.positions, rotation.cos, rotation.sin, kv_scales
            )
        if metadata.is_decode_only:
            return self._decode(q, kv_cache, metadata, kv_scales)
        return self._prefill(q, kv_cache, metadata, kv_scales)

    def _decode(self, q, kv_cache, metadata: AttentionMetadata, kv_scales) -> torch.Tensor:
        # q: [num_seqs, num_heads, head_dim], one query token per sequence
        return paged_decode_attention(
            q,
            kv_cache,
            metadata.block_tables,
            metadata.context_lens,
            metadata.max_context_len,
            kv_scales=kv_scales,
            softmax_scale=self.scale,
            sliding_window=self.sliding_window,
            split=metadata.decode_split,
        )

    def _prefill(self, q, kv_cache, metadata: AttentionMetadata, kv_scales) -> torch.Tensor:
        starts = metadata.query_start_cpu
        max_query_len = max(end - begin for begin, end in zip(starts, starts[1:]))
        return prefill_attention(
            q,
            kv_cache,
            metadata.block_tables,
            metadata.query_start,
            metadata.context_lens,
            max_query_len,
            kv_scales=kv_scales,
            softmax_scale=self.scale,
            sliding_window=self.sliding_window,
        )


def check_runnable(device: torch.device) -> None:
    """Raise ValueError unless the kernels can run on `device`: CUDA, or the CPU under TRITON_INTERPRET=1."""
    if not HAS_TRITON:
        raise ValueError("attention_backend 'triton' needs the triton package; use attention_backend 'torch'")
    if device.type == "cuda" or (device.type == "cpu" and is_interpreted(_prefill_attention_kernel)):
        return
    raise ValueError(
        f"attention_backend 'triton' runs on CUDA devices, or on the CPU only under TRITON_INTERPRET=1 "
        f"(set before kernels/ is imported; for tests), got device {device}; use attention_backend 'torch'"
    )
