"""Whether a FlashAttention varlen call really computes our attention here, tried once before first use.

torch's `varlen_attn` changed between releases (2.10: `is_causal`; 2.11: `window_size`; `enable_gqa` later)
and runs only where its kernels were built for the GPU. A wrong guess about the one in this process must cost
speed, never answers: before a model's first fresh prefill takes the dense path, `varlen_works` runs it once
on a small problem of the model's shape (two sequences, q a strided view as the fused qkv projection gives
it) and compares with plain torch. An exception or a mismatch turns the path off for that shape, with a
warning that says why; the paged kernel then attends every sequence as before.
"""

from __future__ import annotations

import itertools
import logging

import torch

from modelgate.backends.llm.attention import fresh_prefill
from modelgate.backends.llm.attention.fresh_prefill import FreshPrefillAttention, SequenceRun

logger = logging.getLogger(__name__)

# Sequence lengths of the trial: two sequences, one shorter than a FlashAttention tile, one longer; with a dense
# call, a third long enough for it (fresh_prefill.DENSE_MIN_TOKENS).
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
    next_try: str | None = None,
) -> bool:
    """Whether `attention` matches plain torch for this shape, dtype and device (tried once per process).
    `next_try`: what the caller tries where this fails (said quietly then), None: the paged kernel (a warning)."""
    key = (
        attention.varlen_attn,
        attention.dense_attn,
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
        _verdicts[key] = _try(attention, num_heads, num_kv_heads, head_dim, scale, window, dtype, device, next_try)
    return _verdicts[key]


def trial_lengths(attention: FreshPrefillAttention) -> tuple[int, ...]:
    """The trial's sequence lengths for `attention`: TRIAL_LENGTHS, and one for its dense call if it has one."""
    return TRIAL_LENGTHS if attention.dense_attn is None else (*TRIAL_LENGTHS, fresh_prefill.DENSE_MIN_TOKENS + 3)


def _try(attention, num_heads, num_kv_heads, head_dim, scale, window, dtype, device, next_try) -> bool:
    generator = torch.Generator().manual_seed(0)
    lengths = trial_lengths(attention)
    tokens = sum(lengths)
    # q, k, v as views of one projection output, as the model hands them over (strided along tokens).
    qkv = torch.randn((tokens, num_heads + 2 * num_kv_heads, head_dim), generator=generator).to(device, dtype)
    q, k, v = qkv.split([num_heads, num_kv_heads, num_kv_heads], dim=1)
    bounds = [0, *itertools.accumulate(lengths)]
    out = torch.zeros_like(q)
    calls = attention.varlen_attn if attention.dense_attn is None else (attention.varlen_attn, attention.dense_attn)
    try:
        query_start = torch.tensor(bounds, dtype=torch.int32, device=device)
        attention.attend(q, k, v, query_start, bounds, SequenceRun(0, len(lengths), True), out)
        expected = dense_causal_reference(q, k, v, bounds, scale, window)
    except Exception as exc:  # any failure of the call: the paged kernel keeps these prefills
        _report(next_try, "%r failed on %s %s: %s", calls, dtype, device, exc)
        return False
    if not torch.allclose(out.float(), expected.float(), atol=TOLERANCE, rtol=TOLERANCE):
        error = (out.float() - expected.float()).abs().max().item()
        _report(next_try, "%r differs from plain torch by up to %.3g on %s %s", calls, error, dtype, device)
        return False
    return True


def _report(next_try: str | None, message: str, *arguments) -> None:
    """A failed trial: said quietly when the caller tries another way next, as a warning otherwise."""
    if next_try is not None:
        logger.info(f"fresh prefills try {next_try}: " + message, *arguments)
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
