"""Plain-torch attention over the paged KV cache: the reference the Triton kernels are tested against.

Decode-only steps gather every sequence's keys into one padded batch; other steps loop
over sequences. Causal within the new tokens, full over the cached prefix; an optional
sliding window limits how far back a query looks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modelgate.backends.llm.attention.metadata import AttentionMetadata


class TorchPagedAttention:
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, sliding_window: int | None = None):
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
        kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim]
        metadata: AttentionMetadata,
    ) -> torch.Tensor:  # [num_tokens, num_heads, head_dim]
        write_kv_cache(k, v, kv_cache, metadata.slot_mapping)
        if metadata.is_decode_only:
            return self._decode(q, kv_cache, metadata)
        return self._varlen(q, k, v, kv_cache, metadata)

    def _decode(self, q: torch.Tensor, kv_cache: torch.Tensor, metadata: AttentionMetadata) -> torch.Tensor:
        return self._decode_rows(q, kv_cache, metadata.block_tables, metadata.context_lens, metadata.max_context_len)

    def _decode_rows(
        self,
        q: torch.Tensor,  # [num_seqs, num_heads, head_dim]: one query per sequence
        kv_cache: torch.Tensor,
        block_tables: torch.Tensor,  # [num_seqs, max_blocks]
        context_lens: torch.Tensor,  # [num_seqs]
        max_context_len: int,
    ) -> torch.Tensor:
        """Single-query sequences as one padded batch: gather their keys, mask past each length."""
        block_size = kv_cache.shape[2]
        num_blocks = -(-max_context_len // block_size)
        tables = block_tables[:, :num_blocks].long()
        keys = kv_cache[0][tables].flatten(1, 2)  # [num_seqs, num_blocks * block_size, num_kv_heads, head_dim]
        values = kv_cache[1][tables].flatten(1, 2)
        key_positions = torch.arange(keys.shape[1], device=q.device)
        lens = context_lens.long().unsqueeze(1)
        visible = key_positions.unsqueeze(0) < lens  # [num_seqs, max_len]
        if self.sliding_window is not None:
            visible &= key_positions.unsqueeze(0) > lens - 1 - self.sliding_window
        out = F.scaled_dot_product_attention(
            q.unsqueeze(2),  # [num_seqs, num_heads, 1, head_dim]
            keys.transpose(1, 2).to(q.dtype),
            values.transpose(1, 2).to(q.dtype),
            attn_mask=visible[:, None, None, :],
            scale=self.scale,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )
        return out.squeeze(2)

    def _varlen(self, q, k, v, kv_cache: torch.Tensor, metadata: AttentionMetadata) -> torch.Tensor:
        out = torch.empty_like(q)
        block_size = kv_cache.shape[2]
        starts = metadata.query_start_cpu
        fresh, others = self._group_fresh_prefills(metadata)
        for length, indexes in fresh.items():
            self._fresh_prefills(q, k, v, out, [starts[i] for i in indexes], length)
        decodes = [i for i in others if starts[i + 1] - starts[i] == 1]
        if decodes:
            self._batched_decodes(q, kv_cache, metadata, out, decodes)
        for index in others:
            if starts[index + 1] - starts[index] == 1:
                continue
            context_len = metadata.context_lens_cpu[index]
            begin, end = starts[index], starts[index + 1]
            num_blocks = -(-context_len // block_size)
            table = metadata.block_tables[index, :num_blocks].long()
            keys = kv_cache[0][table].flatten(0, 1)[:context_len]  # [context_len, num_kv_heads, head_dim]
            values = kv_cache[1][table].flatten(0, 1)[:context_len]
            mask = self._mask(end - begin, context_len, q.device)
            out[begin:end] = F.scaled_dot_product_attention(
                q[begin:end].transpose(0, 1),  # [num_heads, n, head_dim]
                keys.transpose(0, 1),
                values.transpose(0, 1),
                attn_mask=mask,
                scale=self.scale,
                enable_gqa=self.num_heads != self.num_kv_heads,
            ).transpose(0, 1)
        return out

    def _batched_decodes(self, q, kv_cache, metadata: AttentionMetadata, out, indexes: list[int]) -> None:
        """The decodes of a mixed step, in one padded batch instead of one call each."""
        selected = torch.tensor(indexes, device=q.device)
        rows = torch.tensor([metadata.query_start_cpu[i] for i in indexes], device=q.device)
        max_len = max(metadata.context_lens_cpu[i] for i in indexes)
        out[rows] = self._decode_rows(
            q[rows], kv_cache, metadata.block_tables[selected], metadata.context_lens[selected], max_len
        )

    def _group_fresh_prefills(self, metadata: AttentionMetadata) -> tuple[dict[int, list[int]], list[int]]:
        """Sequences whose whole context is new this step, by length; and the rest.

        Fresh prefills need no cache read: equal-length ones run as one causal batch.
        """
        fresh: dict[int, list[int]] = {}
        others = []
        starts = metadata.query_start_cpu
        for index, context_len in enumerate(metadata.context_lens_cpu):
            num_queries = starts[index + 1] - starts[index]
            is_fresh = num_queries == context_len
            if is_fresh and (self.sliding_window is None or context_len <= self.sliding_window):
                fresh.setdefault(context_len, []).append(index)
            else:
                others.append(index)
        return fresh, others

    def _fresh_prefills(self, q, k, v, out, begins: list[int], length: int) -> None:
        rows = torch.tensor(begins, device=q.device).unsqueeze(1) + torch.arange(length, device=q.device)
        out[rows] = F.scaled_dot_product_attention(
            q[rows].transpose(1, 2),  # [num_seqs, num_heads, length, head_dim]
            k[rows].transpose(1, 2).to(q.dtype),
            v[rows].transpose(1, 2).to(q.dtype),
            is_causal=True,
            scale=self.scale,
            enable_gqa=self.num_heads != self.num_kv_heads,
        ).transpose(1, 2)

    def _mask(self, num_queries: int, context_len: int, device) -> torch.Tensor:
        """[num_queries, context_len] bool: query j (position context_len - num_queries + j) sees keys <= it."""
        query_positions = torch.arange(context_len - num_queries, context_len, device=device).unsqueeze(1)
        key_positions = torch.arange(context_len, device=device).unsqueeze(0)
        visible = key_positions <= query_positions
        if self.sliding_window is not None:
            visible &= key_positions > query_positions - self.sliding_window
        return visible


def write_kv_cache(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store each new token's K and V at its slot (block * block_size + offset)."""
    num_kv_heads, head_dim = kv_cache.shape[3], kv_cache.shape[4]
    kv_cache[0].view(-1, num_kv_heads, head_dim)[slot_mapping] = k.to(kv_cache.dtype)
    kv_cache[1].view(-1, num_kv_heads, head_dim)[slot_mapping] = v.to(kv_cache.dtype)
