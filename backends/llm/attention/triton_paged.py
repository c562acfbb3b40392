"""Attention over the paged KV cache with the Triton kernels in kernels/: the GPU implementation.

Same contract as `TorchPagedAttention.forward` (the reference it is tested against): write the step's K/V
into the cache (`kernels.reshape_and_cache`; with a `rotation`, `kernels.rotary_reshape_and_cache`, which also
applies the rotary embedding to q and k on the way, one launch instead of two), then
- a decode-only step (one query per sequence) runs `kernels.paged_decode_attention` (split-KV when the
  batch alone would leave SMs idle);
- any other step splits its sequences into runs: chunks over a cached prefix and a mixed step's one-token
  decodes go to `kernels.prefill_attention` (the decodes in launches of their own, on its short-query tile, where
  the run has few pieces: `tile_parts`), fresh prefills (no cached prefix) to torch's FlashAttention
  `varlen_attn` over the step's own K/V where torch and the dtype allow it (fresh_prefill.py); without it,
  prefill_attention takes them too. With `decodes_in_mixed_steps` each contiguous run of one-token decodes
  takes the decode kernel instead: the prefill kernel's programs own up to BLOCK_Q query tokens of a sequence,
  of which a decode fills one.
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

from modelgate.backends.llm.attention.fresh_prefill import (
    FreshPrefillAttention,
    SequenceRun,
    torch_cudnn_attn,
    torch_varlen_attn,
)
from modelgate.backends.llm.attention.metadata import AttentionMetadata
from modelgate.backends.llm.attention.step_derived import once_per_step
from modelgate.backends.llm.attention.varlen_check import varlen_works
from modelgate.backends.llm.models.rotary import Rotation
from modelgate.kernels import prefill_attention as prefill_attention_module
from modelgate.kernels.fp8_quant import HAS_TRITON, is_interpreted
from modelgate.kernels.paged_decode_attention import paged_decode_attention
from modelgate.kernels.prefill_attention import _prefill_attention_kernel, prefill_attention
from modelgate.kernels.reshape_and_cache import reshape_and_cache
from modelgate.kernels.rotary_embedding import rotary_embedding
from modelgate.kernels.rotary_reshape_and_cache import rotary_reshape_and_cache


class TritonPagedAttention:
    # Whether the model may hand the rotary embedding to forward (`rotation`) instead of applying it first;
    # set False on an instance for the unfused path (two launches), e.g. to compare the two.
    fuses_rotary: bool = True
    # FlashAttention's variable-length call for fresh prefills (fresh_prefill.py); None: the paged kernel
    # attends them too. Set per instance (torch's where CUDA has it), or to a stand-in in tests.
    varlen_attn = None
    # Whether a mixed step's one-token decodes take the decode kernel, else the prefill kernel with the rest of
    # their run. Off: on the H100 the decode kernel attends 256 decodes at 193 tokens in 52 us per layer against
    # the prefill kernel's 321 (benchmarks/decode_attention.py), but served 128/128 at concurrency 256 with it on
    # gave a longer TPOT (13.1 against 12.0 ms) and fewer tokens/s (session 27's served A/B), for reasons not
    # measured yet (the extra eager launch per layer, the split's host planning?). Set it on an instance or the
    # class to compare the two.
    decodes_in_mixed_steps: bool = False
    # Long fresh prefills through cuDNN's attention one sequence at a time (fresh_prefill.py), where torch has it
    # and CUDA runs; set per instance from `long_prefills_on_cudnn`, by use_cudnn_for_long_prefills (the engine
    # parameter cudnn_prefill_attention), or a stand-in in tests. Off by default: on the H100 it
    # cut the engine's TTFT at 1,024 tokens from 18.5 to 17.3 ms (session 27), but torch builds a cuDNN graph
    # for every new shape: 53-84 ms of host time on the H100 (session 28,
    # benchmarks/results/cudnn_sdpa_first_calls_h100_session28.log). With it on, the engine's warm-up builds one
    # graph per DENSE_BUCKET_TOKENS bucket up to the step budget (warm_up_fresh_prefills: ~30 at 8k tokens, some
    # 2 s of load); on by default once the H100 has timed that warm-up and a served run at varied prompt lengths.
    dense_attn = None
    long_prefills_on_cudnn: bool = False

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
        if torch.device(device).type == "cuda":
            self.varlen_attn = torch_varlen_attn()
            if self.long_prefills_on_cudnn:
                self.use_cudnn_for_long_prefills()

    def use_cudnn_for_long_prefills(self) -> None:
        """Long fresh prefills through cuDNN from now on (as long_prefills_on_cudnn on the class), where torch
        has its backend and CUDA runs; otherwise nothing changes."""
        if self.varlen_attn is not None:
            self.dense_attn = torch_cudnn_attn()

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
        runs = None if metadata.is_decode_only else self._runs_with_fresh(q, metadata)
        if rotation is None:
            reshape_and_cache(k, v, kv_cache, metadata.slot_mapping, kv_scales)
        elif runs is not None:  # the dense path reads k: rotate it, not only its copy in the cache
            rotary_embedding(q, k, rotation.positions, rotation.cos, rotation.sin)
            reshape_and_cache(k, v, kv_cache, metadata.slot_mapping, kv_scales)
        else:
            rotary_reshape_and_cache(
                q, k, v, kv_cache, metadata.slot_mapping, rotation.positions, rotation.cos, rotation.sin, kv_scales
            )
        return self._attend(q, k, v, kv_cache, metadata, kv_scales, runs)

    def write_kv(self, k, v, kv_cache, slot_mapping: torch.Tensor, kv_scales=None) -> None:
        """Write k (rotated) and v into the cache at slot_mapping (slot -1: skipped): the first half of forward,
        for a caller that rotates q and k itself (the piecewise step graphs, backends/llm/step_graphs.py)."""
        reshape_and_cache(k, v, kv_cache, slot_mapping, kv_scales)

    def attend_written(self, q, k, v, kv_cache, metadata: AttentionMetadata, kv_scales, out: torch.Tensor) -> None:
        """The second half of forward, into `out` ([num_tokens, num_heads, head_dim]): attention of q (rotated)
        once `write_kv` has put the step's K/V in the cache; k and v are rotated k and v, read by fresh prefills."""
        runs = None if metadata.is_decode_only else self._runs_with_fresh(q, metadata)
        attended = self._attend(q, k, v, kv_cache, metadata, kv_scales, runs, out)
        if attended is not out:
            out.copy_(attended)

    def _attend(self, q, k, v, kv_cache, metadata: AttentionMetadata, kv_scales, runs, out=None) -> torch.Tensor:
        """Attention once the cache holds the step's K/V: the decode kernel, the paged prefill kernel, or each run
        of sequences by its path (runs: from _runs_with_fresh). Writes into `out` where given, except decodes
        (the decode kernel returns a new tensor)."""
        if metadata.is_decode_only:
            return self._decode(q, kv_cache, metadata, kv_scales)
        out = torch.empty_like(q) if out is None else out
        for run in runs or [SequenceRun(0, metadata.num_seqs, False)]:
            if run.is_fresh:
                fresh = self._fresh_attention()
                fresh.attend(q, k, v, metadata.query_start, metadata.query_start_cpu, run, out, metadata.derived)
                continue
            if not self.decodes_in_mixed_steps:
                for part in _per_step(metadata, tile_parts, run, metadata.query_start_cpu):
                    self._prefill(q, kv_cache, metadata, kv_scales, part, out)
                continue
            for part, is_one_token in _per_step(metadata, one_token_parts, run, metadata.query_start_cpu):
                if is_one_token:
                    self._decode_part(q, kv_cache, metadata, kv_scales, part, out)
                else:
                    self._prefill(q, kv_cache, metadata, kv_scales, part, out)
        return out

    def warm_up_fresh_prefills(self, max_tokens: int, dtype: torch.dtype, device: torch.device) -> int:
        """Before serving: the fresh-prefill trial, then the dense call at every padded length of a fresh
        sequence of up to max_tokens tokens (FreshPrefillAttention.warm_dense_buckets: torch's cuDNN graphs
        built now, not in a request's TTFT). Returns the number of lengths warmed (0: no dense call)."""
        fresh = self._checked_fresh(dtype, torch.device(device))
        return 0 if fresh is None else fresh.warm_dense_buckets(max_tokens, self.head_dim, dtype, device)

    def _runs_with_fresh(self, q: torch.Tensor, metadata: AttentionMetadata) -> list[SequenceRun] | None:
        """The step's runs of sequences when some run is fresh and may go the dense way, else None."""
        if self._checked_fresh(q.dtype, q.device) is None:
            return None
        runs = metadata.sequence_runs
        return runs if any(run.is_fresh for run in runs) else None

    def _checked_fresh(self, dtype: torch.dtype, device: torch.device) -> FreshPrefillAttention | None:
        """The fresh-prefill attention that passed its trial for q's dtype and device, or None."""
        fresh = self._fresh_attention()
        if fresh is None or not FreshPrefillAttention.takes(dtype, self.head_dim):
            return None
        shape = (self.num_heads, self.num_kv_heads, self.head_dim, self.scale, self.sliding_window)
        # Tried once: a wrong call costs speed, not answers. Where it fails, its fallbacks get trials of their own:
        # without the dense call, then K/V heads repeated for a call that refuses fewer than the query heads.
        # The fallbacks are made only where the trial fails (its verdict is kept: every later step asks again).
        if varlen_works(fresh, *shape, dtype, device, _next_try(fresh)):
            return fresh
        for candidate in fresh.fallbacks()[1:]:
            if varlen_works(candidate, *shape, dtype, device, _next_try(candidate)):
                self._fresh = candidate
                return candidate
        return None

    def _fresh_attention(self) -> FreshPrefillAttention | None:
        """The dense path for the current `varlen_attn`, made once; None without one or for its window."""
        made = self.__dict__.get("_fresh")
        if made is not None and made.varlen_attn is self.varlen_attn and self._made_dense == self.dense_attn:
            return made
        if self.varlen_attn is None:
            return None
        try:
            made = FreshPrefillAttention(
                self.varlen_attn,
                self.num_heads,
                self.num_kv_heads,
                self.scale,
                self.sliding_window,
                dense_attn=self.dense_attn,
            )
        except ValueError:  # this torch cannot apply the window: the paged kernel takes everything
            self.varlen_attn = None
            return None
        self._fresh, self._made_dense = made, self.dense_attn
        return made

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

    def _decode_part(self, q, kv_cache, metadata: AttentionMetadata, kv_scales, run: SequenceRun, out) -> None:
        """The decode kernel for sequences [run.first, run.end) of a mixed step, one query token each: their rows
        of `out`. Outside CUDA graphs (mixed steps run their attention eagerly), so the kernel plans its split."""
        rows = slice(metadata.query_start_cpu[run.first], metadata.query_start_cpu[run.end])
        block_tables, _, context_lens = _per_step(metadata, run_tables, run, metadata)
        paged_decode_attention(
            q[rows],
            kv_cache,
            block_tables,
            context_lens,
            _per_step(metadata, longest_context, run, metadata.context_lens_cpu),
            kv_scales=kv_scales,
            softmax_scale=self.scale,
            sliding_window=self.sliding_window,
            out=out[rows],
        )

    def _prefill(self, q, kv_cache, metadata: AttentionMetadata, kv_scales, run: SequenceRun, out=None):
        """The paged kernel for sequences [run.first, run.end): their rows of `out` (a new tensor if None)."""
        block_tables, query_start, context_lens = _per_step(metadata, run_tables, run, metadata)
        return prefill_attention(
            q,
            kv_cache,
            block_tables,
            query_start,
            context_lens,
            _per_step(metadata, longest_query, run, metadata.query_start_cpu),
            kv_scales=kv_scales,
            softmax_scale=self.scale,
            sliding_window=self.sliding_window,
            out=out,
        )


# A cached run whose short queries (kernels/prefill_attention.py's SHORT_QUERY_TOKENS: a mixed step's decodes) and
# longer chunks alternate at most this many times takes one prefill launch per piece, so that the short pieces get
# the short-query tile; a more fragmented run takes one launch on the default tile.
MAX_TILE_PARTS = 4


def tile_parts(run: SequenceRun, query_start: list[int]) -> list[SequenceRun]:
    """The prefill launches for a run of cached sequences: its maximal pieces of short queries and of longer ones
    where there are two to MAX_TILE_PARTS of them, else the run whole."""
    short = prefill_attention_module.SHORT_QUERY_TOKENS
    if short <= 0:
        return [run]
    parts = one_token_parts(run, query_start, short)
    return [part for part, _ in parts] if 1 < len(parts) <= MAX_TILE_PARTS else [run]


def one_token_parts(run: SequenceRun, query_start: list[int], max_tokens: int = 1) -> list[tuple[SequenceRun, bool]]:
    """A run of cached sequences cut into maximal runs of queries of at most max_tokens tokens (True: one-token
    decodes by default) and longer chunks (False)."""
    parts: list[tuple[SequenceRun, bool]] = []
    for index in range(run.first, run.end):
        is_one_token = query_start[index + 1] - query_start[index] <= max_tokens
        if parts and parts[-1][1] == is_one_token:
            parts[-1] = (parts[-1][0]._replace(end=index + 1), is_one_token)
        else:
            parts.append((SequenceRun(index, index + 1, False), is_one_token))
    return parts


def longest_query(run: SequenceRun, query_start: list[int]) -> int:
    """The most query tokens of a sequence in the run (sizes the prefill kernel's grid, picks its tile)."""
    starts = query_start[run.first : run.end + 1]
    return max(end - begin for begin, end in zip(starts, starts[1:]))


def longest_context(run: SequenceRun, context_lens: list[int]) -> int:
    """The longest context of a sequence in the run (sizes the decode kernel's split)."""
    return max(context_lens[run.first : run.end])


def run_tables(run: SequenceRun, metadata: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The run's rows of the step's block tables, query starts (one more than its sequences) and context lengths,
    as views."""
    return (
        metadata.block_tables[run.first : run.end],
        metadata.query_start[run.first : run.end + 1],
        metadata.context_lens[run.first : run.end],
    )


def _per_step(metadata: AttentionMetadata, derive, run: SequenceRun, source):
    """derive(run, source) once per step (step_derived.py; source: one of the step's lists, or its metadata)."""
    return once_per_step(metadata.derived, (derive.__name__, run), derive, run, source)


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


def _next_try(attention: FreshPrefillAttention) -> str | None:
    """What FreshPrefillAttention.fallbacks tries after `attention`, for its trial's log line; None: nothing."""
    if attention.dense_attn is not None:
        return "without the dense call"
    return "K/V heads repeated" if attention.can_repeat_kv and not attention.repeats_kv else None
