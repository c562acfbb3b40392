"""CUDA graphs of decode steps: the model forward and the logits captured once per padded batch size.

An 8B decode step launches about ten kernels per layer; at small batches the GPU finishes each faster than
Python launches the next, so the step costs launch time, not memory time. A graph replays all of them in
one launch.

What a capture fixes, and how one graph serves every step of its size:
- Inputs live in static buffers sized for the largest batch: token_ids, positions, slot_mapping
  [max_batch] int64, context_lens [max_batch] int32, block_tables [max_batch, max_blocks_per_seq] int32.
  A step copies its values in (from pinned host buffers) and replays the graph.
- A step of n sequences replays the smallest captured size b >= n. Rows n..b-1 are padding: slot -1 (the
  KV write skips it) and context length 0 (decode attention gives 0 for it); their logits are dropped.
- Decode attention's KV split is planned from max_model_len and fixed in the graph (metadata.decode_split):
  partitions past a sequence's context return at once.
- Block-table columns past a sequence's last block may hold stale numbers from earlier steps: the kernels
  read only blocks below ceil(context_len / block_size).

`replay=False` runs the same static-buffer path eagerly instead of replaying: the CPU tests check padding,
buffers and the fixed split that way (graphs need CUDA).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from modelgate.backends.llm.attention.metadata import AttentionMetadata

logger = logging.getLogger(__name__)


def capture_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, 8, then every multiple of 16 up to max_batch_size, and max_batch_size itself."""
    if max_batch_size < 1:
        return []
    sizes = {size for size in (1, 2, 4, 8, *range(16, max_batch_size + 1, 16)) if size <= max_batch_size}
    return sorted(sizes | {max_batch_size})


@dataclass(frozen=True)
class DecodeRows:
    """One decode step's sequences, row i for sequence i (host side)."""

    token_ids: list[int]  # the token each sequence feeds
    positions: list[int]  # its position (= tokens already in the cache)
    slots: list[int]  # the cache slot its K/V go to
    block_ids: list[list[int]]  # each sequence's block table

    @property
    def num_seqs(self) -> int:
        return len(self.token_ids)


class DecodeGraphs:
    """Decode forwards (model + logits) at fixed batch sizes, replayed from static input buffers."""

    def __init__(
        self,
        model,
        kv_caches,
        kv_scales,
        *,
        batch_sizes: list[int],
        max_model_len: int,
        block_size: int,
        decode_split_for,
        device: torch.device,
        replay: bool = True,
        pool=None,
    ):
        """decode_split_for(batch_size) -> the DecodeSplit a graph of that size fixes (from max_model_len).
        pool: the CUDA graph memory pool to capture into (shared with the runner's other graphs); None: a new one."""
        if not batch_sizes:
            raise ValueError("DecodeGraphs needs at least one batch size")
        self.model = model
        self.kv_caches = kv_caches
        self.kv_scales = kv_scales
        self.batch_sizes = sorted(set(batch_sizes))
        self.max_batch_size = self.batch_sizes[-1]
        self.max_model_len = max_model_len
        self.block_size = block_size
        self.replay = replay
        self.device = device
        self._decode_split_for = decode_split_for
        max_blocks = math.ceil(max_model_len / block_size)
        rows = self.max_batch_size
        # Static device inputs: every graph reads slices [:size] of these. They are views of two buffers, one per
        # dtype, each filled by one copy per step from a pinned host twin of the same layout (five copies
        # measured ~1 us of GPU time each, and a decode step at batch 1 waits for every one).
        self._longs = torch.zeros((3, rows), dtype=torch.long, device=device)
        self.token_ids, self.positions, self.slot_mapping = self._longs[0], self._longs[1], self._longs[2]
        self.slot_mapping.fill_(-1)
        # int32: context_lens first, then the block tables' rows, so a step's rows [:size] are one prefix.
        self._ints = torch.zeros(rows + rows * max_blocks, dtype=torch.int32, device=device)
        self.context_lens = self._ints[:rows]
        self.block_tables = self._ints[rows:].view(rows, max_blocks)
        # Host staging, pinned so the copies are asynchronous; numpy views fill them without per-item torch calls.
        pin = device.type == "cuda"
        self._host_longs = torch.zeros((3, rows), dtype=torch.long, pin_memory=pin)
        self._host_ints = torch.zeros(rows + rows * max_blocks, dtype=torch.int32, pin_memory=pin)
        self._longs_np = self._host_longs.numpy()
        self._context_np = self._host_ints[:rows].numpy()
        self._tables_np = self._host_ints[rows:].view(rows, max_blocks).numpy()
        self._max_blocks = max_blocks
        self._copies_done = torch.cuda.Event() if device.type == "cuda" else None
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._logits: dict[int, torch.Tensor] = {}
        # Every size's logits land in rows [:size] of one buffer: one capture's output each would hold
        # sum(sizes) rows (about 4 GiB of a 128k vocabulary at max_num_seqs 512) for as long as the graphs live.
        self._logits_buffer = torch.empty((rows, model.config.vocab_size), dtype=torch.float32, device=device)
        self._pool = pool

    def supports(self, num_seqs: int) -> bool:
        return 0 < num_seqs <= self.max_batch_size

    def padded_size(self, num_seqs: int) -> int:
        for size in self.batch_sizes:
            if size >= num_seqs:
                return size
        raise ValueError(f"{num_seqs} sequences exceed the largest captured batch size {self.max_batch_size}")

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture one graph per batch size, largest first so the smaller ones reuse its memory pool."""
        if not self.replay:
            return
        started = time.perf_counter()
        pool = self._pool if self._pool is not None else torch.cuda.graph_pool_handle()
        for size in reversed(self.batch_sizes):
            metadata = self._metadata(size)
            # An eager run first: Triton compiles its kernels and cuBLAS picks its algorithms outside the capture.
            # Tensor parallelism (backends/llm/parallel/): the forward holds NCCL collectives (all-reduces after
            # o_proj, down_proj and the embedding, the logits' all-gather), which the graph records like kernels.
            # Every rank captures the same sizes in this same order (each runs this code at load), and the
            # communicators exist before the capture (init_process_group gets device_id; this eager run uses
            # them too). Not run yet on several GPUs.
            self._forward(size, metadata)
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._logits[size] = self._forward(size, metadata)
            self._graphs[size] = graph
        torch.cuda.synchronize(self.device)
        logger.info(
            "captured %d decode CUDA graphs (batch sizes %s) in %.1f s",
            len(self._graphs),
            self.batch_sizes,
            time.perf_counter() - started,
        )

    @torch.inference_mode()
    def run(self, rows: DecodeRows, device_token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """float32 logits [rows.num_seqs, vocab] of one decode step; the K/V of its tokens land in the cache.

        device_token_ids [rows.num_seqs] int64 on the device replaces rows.token_ids: the tokens a step still
        queued on the stream samples (a step launched ahead of its predecessor's result)."""
        n = rows.num_seqs
        size = self.padded_size(n)
        self._stage(rows, size)
        if device_token_ids is not None:
            self.token_ids[:n].copy_(device_token_ids)  # stream-ordered after the argmax that writes them
        if not self.replay:
            return self._forward(size, self._metadata(size))[:n]
        self._graphs[size].replay()
        return self._logits[size][:n]

    def _stage(self, rows: DecodeRows, size: int) -> None:
        if self._copies_done is not None:
            self._copies_done.synchronize()  # the previous step's copies have left the staging buffers
        n = rows.num_seqs
        longs, context, tables = self._longs_np, self._context_np, self._tables_np
        longs[0, :n] = rows.token_ids
        longs[1, :n] = rows.positions
        longs[2, :n] = rows.slots
        longs[:2, n:size] = 0
        longs[2, n:size] = -1  # padding rows write no K/V...
        context[:n] = longs[1, :n] + 1
        context[n:size] = 0  # ...and attend to nothing
        for row, block_ids in enumerate(rows.block_ids):
            tables[row, : len(block_ids)] = block_ids
        # Rows past `size` carry stale values; the graph of this size reads none of them.
        self._longs.copy_(self._host_longs, non_blocking=True)
        prefix = self.max_batch_size + size * self._max_blocks  # context_lens, then the tables' first rows
        self._ints[:prefix].copy_(self._host_ints[:prefix], non_blocking=True)
        if self._copies_done is not None:
            self._copies_done.record()

    def _metadata(self, size: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[:size],
            query_start=torch.arange(size + 1, dtype=torch.int32, device=self.device),
            context_lens=self.context_lens[:size],
            block_tables=self.block_tables[:size],
            query_start_cpu=list(range(size + 1)),
            context_lens_cpu=[self.max_model_len] * size,
            max_context_len=self.max_model_len,
            is_decode_only=True,
            decode_split=self._decode_split_for(size),
        )

    def _forward(self, size: int, metadata: AttentionMetadata) -> torch.Tensor:
        hidden = self.model(self.token_ids[:size], self.positions[:size], self.kv_caches, metadata, self.kv_scales)
        return self.model.compute_logits(hidden, out=self._logits_buffer[:size])
