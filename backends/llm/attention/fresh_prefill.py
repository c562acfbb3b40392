"""Fresh prefills through torch's variable-length flash attention, over the step's own K/V.

A sequence whose whole context is new in this step (no cached prefix: its context length equals its query
count) needs no key from the paged cache: its keys and values are the step's k and v, dense and in q's dtype.
torch's `varlen_attn` (FlashAttention's variable-length kernel) attends those several times faster than the
paged Triton kernel on Hopper (benchmarks/prefill_attention.py measures both against the GPU's matmul rate),
and from bf16 K/V rather than their FP8 copies in the cache. Every other sequence (a chunk over a cached
prefix, a prefix-cache hit, a decode of a mixed step) stays with the paged kernel.

`sequence_runs` splits a step's sequences into contiguous runs of fresh and cached ones: the scheduler puts
running requests first and new ones after, so a mixed step is usually two runs, one launch each.

Where a `dense_attn` is given (torch's scaled_dot_product_attention on its cuDNN backend, `torch_cudnn_attn`),
each fresh sequence of DENSE_MIN_TOKENS to DENSE_MAX_TOKENS tokens goes to it alone, as a batch of one:
cuDNN's attention took half the varlen call's time at 1k, 2k and 8k tokens on the H100 (0.061 against 0.121 ms
per layer at one 1,024-token prompt, benchmarks/prefill_attention.py, session 27). Shorter sequences stay in
one varlen call, since a call per sequence would cost more host time than the kernels save; longer ones too
(DENSE_MAX_TOKENS bounds the graphs built at load).

torch builds a cuDNN graph for each new shape it meets (53-84 ms of host time each on the H100, session 28),
and prompt lengths vary from request to request. So a sequence goes to the dense call copied into zero rows
padded to a multiple of DENSE_BUCKET_TOKENS, always the same contiguous layout: the shapes are then the
buckets up to the longest fresh sequence a step holds, which `warm_dense_buckets` calls once each at load,
so that no request pays a build. Under a causal mask the padded keys come after every real query, so the
real rows' results are exactly those of the unpadded call.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import NamedTuple

import torch

from modelgate.backends.llm.attention.step_derived import once_per_step

# The dtypes FlashAttention computes in; an fp32 model keeps the paged kernel.
FLASH_DTYPES = (torch.bfloat16, torch.float16)
# FlashAttention's largest head size.
MAX_FLASH_HEAD_DIM = 256
# A fresh sequence this long or longer goes to `dense_attn` on its own, where there is one...
DENSE_MIN_TOKENS = 512
# ... up to this long (longer ones stay in the varlen call): it bounds the graphs the warm-up builds, one per
# bucket, to 63 (53-84 ms each on the H100, about 4 s), whatever the model's context length.
DENSE_MAX_TOKENS = 16384
# ... padded to a multiple of this many tokens (the shapes the dense call sees, and builds graphs for).
DENSE_BUCKET_TOKENS = 256


class SequenceRun(NamedTuple):
    """Sequences [first, end) of the step, all fresh or all over a cached context."""

    first: int
    end: int
    is_fresh: bool


def sequence_runs(query_start: list[int], context_lens: list[int]) -> list[SequenceRun]:
    """The step's sequences as maximal contiguous runs of fresh (context == its new tokens) or cached ones."""
    runs: list[SequenceRun] = []
    for index, context_len in enumerate(context_lens):
        is_fresh = context_len == query_start[index + 1] - query_start[index]
        if runs and runs[-1].is_fresh == is_fresh:
            runs[-1] = runs[-1]._replace(end=index + 1)
        else:
            runs.append(SequenceRun(index, index + 1, is_fresh))
    return runs


class FreshPrefillAttention:
    """Causal attention of fresh sequences over their own dense K/V, through a FlashAttention-style
    `varlen_attn(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, ...)` (torch's, or a stand-in in tests), and the
    long ones through `dense_attn(q, k, v, scale=..., enable_gqa=...)` where given: causal attention of one
    sequence as torch's scaled_dot_product_attention computes it, q [1, heads, n, d], k and v [1, kv_heads, n, d]
    (strided views), returning [1, heads, n, d]. There is no dense call for a sliding window."""

    def __init__(
        self,
        varlen_attn: Callable,
        num_heads: int,
        num_kv_heads: int,
        scale: float,
        window: int | None,
        *,
        repeat_kv: bool = False,
        dense_attn: Callable | None = None,
    ):
        """Raises ValueError when `varlen_attn` cannot apply the sliding window (torch 2.10: causal only).

        GQA: a `varlen_attn` with `enable_gqa` gets the K/V heads as they are and the flag. One without it
        (torch <= 2.12) gets them as they are too, since FlashAttention's kernel groups query heads over K/V
        heads itself (the repeats cost two copies of K/V per layer: 0.77 ms of a 1k-token prefill of an 8B on
        an H100), unless `repeat_kv`: then each K/V head is repeated for its group of query heads, for a call
        that insists on as many K/V heads as query heads (varlen_check.py tries the first way, then this).
        """
        parameters = inspect.signature(varlen_attn).parameters
        self.varlen_attn = varlen_attn
        self.dense_attn = dense_attn if window is None else None
        self._heads = (num_heads, num_kv_heads)
        self._group = num_heads // num_kv_heads
        self._scale = scale
        self._gqa_inside = "enable_gqa" in parameters
        self.repeats_kv = repeat_kv and self._group > 1 and not self._gqa_inside
        if "window_size" in parameters:  # torch >= 2.11: (left, right); a query sees itself and `left` before it
            self._causal = {"window_size": (-1 if window is None else window - 1, 0)}
        elif "is_causal" in parameters and window is None:  # torch 2.10
            self._causal = {"is_causal": True}
        else:
            raise ValueError(f"{varlen_attn!r} takes neither window_size nor is_causal for a window of {window}")

    @property
    def can_repeat_kv(self) -> bool:
        """Whether a repeating variant differs from this one (GQA heads, and a call without `enable_gqa`)."""
        return self._group > 1 and not self._gqa_inside

    def with_repeated_kv(self) -> FreshPrefillAttention:
        """The same attention with each K/V head repeated for its query heads before the call."""
        repeating = copy.copy(self)
        repeating.repeats_kv = self.can_repeat_kv
        return repeating

    def without_dense(self) -> FreshPrefillAttention:
        """The same attention with every fresh sequence in the varlen call."""
        varlen_only = copy.copy(self)
        varlen_only.dense_attn = None
        return varlen_only

    def fallbacks(self) -> list[FreshPrefillAttention]:
        """This attention, then what to try where it fails its trial (varlen_check.py), in order: without the
        dense call, then with K/V heads repeated for a varlen call that refuses fewer of them."""
        candidates = [self] if self.dense_attn is None else [self, self.without_dense()]
        if self.can_repeat_kv and not self.repeats_kv:
            candidates.append(candidates[-1].with_repeated_kv())
        return candidates

    @staticmethod
    def takes(q_dtype: torch.dtype, head_dim: int) -> bool:
        """Whether FlashAttention computes queries of this dtype and head size."""
        return q_dtype in FLASH_DTYPES and head_dim <= MAX_FLASH_HEAD_DIM

    def attend(
        self,
        q: torch.Tensor,  # [num_tokens, num_heads, head_dim], rotated
        k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim], rotated
        v: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        query_start: torch.Tensor,  # [num_seqs + 1] int32 on q's device
        query_start_cpu: list[int],
        run: SequenceRun,
        out: torch.Tensor,  # [num_tokens, num_heads, head_dim]: the run's rows are written
        derived: dict | None = None,
    ) -> None:
        """`derived`: the step's AttentionMetadata.derived, where what every layer would work out again from the
        step's sequences (the pieces, each varlen call's bounds) is kept for the step's other layers."""
        if self.dense_attn is None:
            self._varlen(q, k, v, query_start, query_start_cpu, run, out, derived)
            return
        pieces = once_per_step(derived, ("long_sequences_apart", run), _long_apart, query_start_cpu, run)
        for piece, is_long in pieces:
            if is_long:
                self._dense(q, k, v, query_start_cpu[piece.first], query_start_cpu[piece.end], out)
            else:
                self._varlen(q, k, v, query_start, query_start_cpu, piece, out, derived)

    def warm_dense_buckets(self, max_tokens: int, head_dim: int, dtype: torch.dtype, device: torch.device) -> int:
        """Call `dense_attn` once at every shape a fresh sequence of up to max_tokens tokens gives it (zeros,
        laid out as `_dense` lays them out), so that torch builds its cuDNN graphs now rather than on a request's
        time to first token. Returns the number of shapes (0 without a dense call)."""
        if self.dense_attn is None:
            return 0
        lengths = dense_bucket_lengths(max_tokens)
        for length in lengths:
            rows = [torch.zeros((length, n, head_dim), dtype=dtype, device=device) for n in self._heads]
            self._dense_call(rows[0], rows[1], torch.zeros_like(rows[1]))
        return len(lengths)

    def _dense(self, q, k, v, begin: int, end: int, out: torch.Tensor) -> None:
        """One sequence, rows [begin, end), through `dense_attn` as a batch of one (heads before tokens), copied
        into zero rows padded to a multiple of DENSE_BUCKET_TOKENS (a copy even where no padding is needed: one
        layout per length, the one warm_dense_buckets prepared; the strided views would need graphs of their own)."""
        length = end - begin
        padded = -(-length // DENSE_BUCKET_TOKENS) * DENSE_BUCKET_TOKENS
        attended = self._dense_call(*(_zero_padded(t[begin:end], padded) for t in (q, k, v)))
        out[begin:end] = attended[0, :, :length].transpose(0, 1)

    def _dense_call(self, q_rows, k_rows, v_rows) -> torch.Tensor:
        """`dense_attn` of [n, heads, d] rows, as [1, heads, n, d] views; returns [1, heads, n, d]."""
        queries, keys, values = (t.unsqueeze(0).transpose(1, 2) for t in (q_rows, k_rows, v_rows))
        return self.dense_attn(queries, keys, values, scale=self._scale, enable_gqa=self._group > 1)

    def _varlen(self, q, k, v, query_start, query_start_cpu: list[int], run: SequenceRun, out, derived=None) -> None:
        found = once_per_step(derived, ("varlen_bounds", run), _varlen_bounds, query_start, query_start_cpu, run)
        begin, end, bounds, longest = found
        keys, values = k[begin:end], v[begin:end]
        extra = dict(self._causal)
        if self._group > 1 and self._gqa_inside:
            extra["enable_gqa"] = True
        elif self.repeats_kv:
            keys = keys.repeat_interleave(self._group, dim=1)
            values = values.repeat_interleave(self._group, dim=1)
        attended = self.varlen_attn(
            q[begin:end], keys, values, bounds, bounds, longest, longest, scale=self._scale, **extra
        )
        out[begin:end] = attended


def _long_apart(query_start_cpu: list[int], run: SequenceRun) -> list[tuple[SequenceRun, bool]]:
    return list(long_sequences_apart(query_start_cpu, run))


def _varlen_bounds(query_start: torch.Tensor, query_start_cpu: list[int], run: SequenceRun):
    """(first row, end row, the run's query starts from 0 on the device, its longest sequence) for a varlen call.
    Rebasing the starts is a device op: once per step, not per layer, where the caller keeps it (`derived`)."""
    begin, end = query_start_cpu[run.first], query_start_cpu[run.end]
    starts = query_start_cpu[run.first : run.end + 1]
    longest = max(b - a for a, b in zip(starts, starts[1:]))
    bounds = query_start[run.first : run.end + 1]
    if begin:
        bounds = bounds - begin
    return begin, end, bounds, longest


def _zero_padded(rows: torch.Tensor, length: int) -> torch.Tensor:
    """`rows` [n, heads, d] followed by zero rows up to `length`, contiguous (a copy, whatever `rows` is)."""
    padded = rows.new_empty((length, *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    padded[rows.shape[0] :].zero_()
    return padded


def dense_bucket_lengths(max_tokens: int) -> list[int]:
    """The padded lengths `_dense` gives sequences of DENSE_MIN_TOKENS up to min(max_tokens, DENSE_MAX_TOKENS)
    tokens, ascending."""
    first = -(-DENSE_MIN_TOKENS // DENSE_BUCKET_TOKENS) * DENSE_BUCKET_TOKENS
    last = -(-min(max_tokens, DENSE_MAX_TOKENS) // DENSE_BUCKET_TOKENS) * DENSE_BUCKET_TOKENS
    return list(range(first, last + 1, DENSE_BUCKET_TOKENS)) if max_tokens >= DENSE_MIN_TOKENS else []


def long_sequences_apart(query_start_cpu: list[int], run: SequenceRun):
    """(piece, is_long) over `run` in order: each sequence of DENSE_MIN_TOKENS to DENSE_MAX_TOKENS tokens alone
    (is_long), the maximal runs of the others between them together."""
    short_from = run.first
    for index in range(run.first, run.end):
        if DENSE_MIN_TOKENS <= query_start_cpu[index + 1] - query_start_cpu[index] <= DENSE_MAX_TOKENS:
            if short_from < index:
                yield SequenceRun(short_from, index, True), False
            yield SequenceRun(index, index + 1, True), True
            short_from = index + 1
    if short_from < run.end:
        yield SequenceRun(short_from, run.end, True), False


def cudnn_causal_attention(q, k, v, *, scale: float, enable_gqa: bool) -> torch.Tensor:
    """Causal attention through torch's scaled_dot_product_attention, its cuDNN backend only (an error where
    cuDNN cannot take the inputs, rather than a slower backend unnoticed)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=enable_gqa
        )


def torch_cudnn_attn() -> Callable | None:
    """`cudnn_causal_attention` where this torch has the cuDNN backend and CUDA, else None."""
    if not torch.cuda.is_available():
        return None
    try:
        from torch.nn.attention import SDPBackend
    except ImportError:
        return None
    return cudnn_causal_attention if hasattr(SDPBackend, "CUDNN_ATTENTION") else None


def torch_varlen_attn() -> Callable | None:
    """torch's `varlen_attn` where this torch has it and CUDA can run it, else None."""
    if not torch.cuda.is_available():
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn
