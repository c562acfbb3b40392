"""What attention needs to know about one engine step, built once per step by the model runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from modelgate.backends.llm.attention.fresh_prefill import SequenceRun, sequence_runs


@dataclass
class AttentionMetadata:
    """The step's sequences, their new tokens laid out back to back.

    Sequence i has query tokens [query_start[i], query_start[i + 1]) at positions
    [context_lens[i] - num_queries(i), context_lens[i]); after this step its KV cache holds
    context_lens[i] tokens, token p in block block_tables[i, p // block_size].
    """

    slot_mapping: torch.Tensor  # [num_tokens] int64: cache slot of each new token's K/V
    query_start: torch.Tensor  # [num_seqs + 1] int32, on the CPU too as `query_start_cpu`
    context_lens: torch.Tensor  # [num_seqs] int32
    block_tables: torch.Tensor  # [num_seqs, max_blocks_per_seq] int32, padded with 0
    query_start_cpu: list[int]
    context_lens_cpu: list[int]
    max_context_len: int
    is_decode_only: bool  # every sequence has exactly one query token
    # A fixed kernels.paged_decode_attention.DecodeSplit for a CUDA-graph capture (planned from max_model_len,
    # so that one graph serves every context length); None: the kernel plans it from max_context_len.
    decode_split: Any = None
    # What an attention backend derives from the step once for all its layers (its launch plan), by its own keys
    # (step_derived.once_per_step).
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_seqs(self) -> int:
        return len(self.context_lens_cpu)

    @cached_property
    def sequence_runs(self) -> list[SequenceRun]:
        """The sequences as contiguous runs of fresh and cached ones (fresh_prefill.py), once per step: every
        layer asks."""
        return sequence_runs(self.query_start_cpu, self.context_lens_cpu)
