"""Whether a FlashAttention varlen call really computes our attention here, tried once before first use.

torch's `varlen_attn` changed between releases (2.10: `is_causal`; 2.11: `window_size`; `enable_gqa` later)
and runs only where its kernels were built for the GPU. A wrong guess about the one in this process must cost
speed, never answers: before a model's first fresh prefill takes the dense path, `varlen_works` runs it once
on a small problem of the model's shape (two sequences, q a strided view as the fused qkv projection gives
it) and compares with plain torch. An exception or a mismatch turns the path off for that shape, with a
warning that says why; the paged kernel then attends every sequence as before.
"""

from __future__ import annotations

import logging

import torch

from modelgate.backends.llm.attention.fresh_prefill import FreshPrefillAttention, SequenceRun

logger = logging.getLogger(__name__)

# Sequence lengths of the trial: two sequences, one shorter than a FlashAttention tile, one longer.
TRIAL_LENGTHS = (5, 150)
# bf16 and fp16 outputs of two correct implementations differ by a few units of their last place.
TOLERANCE = 2e-2

_verdicts: dict[tuple, bool] = {}


def varlen_works(
    attention: FreshPrefillAttention,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    scale: float,
    window: int | None,
    dtype: torch.dtype,
    device: torch.device,
) -> bool:
    """Whether `attention` matches plain torch for this shape, dtype and device (tried once per process)."""
    key = (
        attention.varlen_attn,
        attention.repeats_kv,
        num_heads,
        num_kv_heads,
        head_dim,
        scale,
        window,
        dtype,
        str(device),
    )
    if key not in _verdicts:
        _verdicts[key] = _try(attention, num_heads, num_kv_heads, head_dim, scale, window, dtype, device)
    return _verdicts[key]


def _try(attention, num_heads, num_kv_heads, head_dim, scale, window, dtype, device) -> bool:
    generator = torch.Generator().manual_seed(0)
    tokens = sum(TRIAL_LENGTHS)
    # q, k, v as views of one projection output, as the model hands them over (strided along tokens).
    qkv = torch.randn((tokens, num_heads + 2 * num_kv_heads, head_dim), generator=generator).to(device, dtype)
    q, k, v = qkv.split([num_heads, num_kv_heads, num_kv_heads], dim=1)
    bounds = [0, TRIAL_LENGTHS[0], tokens]
    out = torch.zeros_like(q)
    try:
        query_start = torch.tensor(bounds, dtype=torch.int32, device=device)
        attention.attend(q, k, v, query_start, bounds, SequenceRun(0, 2, True), out)
        expected = dense_causal_reference(q, k, v, bounds, scale, window)
    except Exception as exc:  # any failure of the call: the paged kernel keeps these prefills
        _report(attention, "%r failed on %s %s: %s", attention.varlen_attn, dtype, device, exc)
        return False
    if not torch.allclose(out.float(), expected.float(), atol=TOLERANCE, rtol=TOLERANCE):
        error = (out.float() - expected.float()).abs().max().item()
        _report(
            attention, "%r differs from plain torch by up to %.3g on %s %s", attention.varlen_attn, error, dtype, device
        )
        return False
    return True


def _report(attention: FreshPrefillAttention, message: str, *arguments) -> None:
    """A failed trial: said quietly when the caller tries K/V heads repeated next, as a warning otherwise."""
    if attention.can_repeat_kv and not attention.repeats_kv:
        logger.info("fresh prefills try K/V heads repeated: " + message, *arguments)
    else:
        logger.warning("fresh prefills stay on the paged kernel: " + message, *arguments)


def dense_causal_reference(
    q: torch.Tensor,  # [num_tokens, num_heads, head_dim]
    k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
    v: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
    bounds: list[int],  # sequence i is rows [bounds[i], bounds[i + 1])
    scale: float,
    window: int | None,  # keys a query sees, itself included
) -> torch.Tensor:  # [num_tokens, num_heads, head_dim] q's dtype
    """Causal attention of each sequence over itself in float32, GQA by head groups, optional sliding window."""
    group = q.shape[1] // k.shape[1]
    out = torch.empty_like(q)
    for begin, end in zip(bounds, bounds[1:]):
        queries = q[begin:end].float().transpose(0, 1)  # [heads, n, d]
        keys = k[begin:end].float().repeat_interleave(group, dim=1).transpose(0, 1)
        values = v[begin:end].float().repeat_interleave(group, dim=1).transpose(0, 1)
        positions = torch.arange(end - begin, device=q.device)
        visible = positions[None, :] <= positions[:, None]
        if window is not None:
            visible &= positions[None, :] > positions[:, None] - window
        scores = (queries @ keys.transpose(1, 2)) * scale
        probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        out[begin:end] = (probs @ values).transpose(0, 1).to(q.dtype)
    return out
