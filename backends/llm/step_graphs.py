"""Piecewise CUDA graphs for the steps the decode graphs do not take: prefills, prefill chunks, mixed steps.

An eager 8B step launches about ten kernels per layer from Python; at a few hundred tokens the GPU finishes
them faster than they are launched, so a 128-token prefill cost 26 ms of host time for 7 ms of kernels
(benchmarks/results/llm_ttft_breakdown_ab_h100_session19.log). Whole-step graphs cannot serve these steps:
their attention depends on how the tokens split into sequences (FlashAttention's variable lengths, the paged
kernel's query lengths), which the host decides per step. So the step is captured in pieces around it, as
vLLM's piecewise graphs do: everything but the attention's read of the cache replays from graphs, one per
layer boundary, and the attention runs eagerly between them.

  piece 0:        embed -> layer 0's input norm, qkv_proj, rotary, KV write
  piece i (1..L-1): layer i-1's o_proj, post-attention norm, MLP -> layer i's input norm, qkv_proj, rotary, KV write
  piece L:        layer L-1's o_proj, post-attention norm, MLP -> the final norm
  between piece i and i+1: layer i's attention (attention_impl.attend_written), eager

A step of T tokens replays the captures of the smallest token count S >= T (`token_counts`): rows T..S-1 are
padding (token 0 at position 0, slot -1: the KV write skips them). Every op in a piece works row by row, so
padding rows never reach real ones; the eager attention reads and writes rows [:T] only.

What crosses a piece boundary lives in static buffers outside the graphs, sized for the largest count and
shared by every layer and count: the rotated qkv (the attention reads q, and fresh prefills read k and v), the
residual stream, the attention's output, the final hidden states. A piece copies its qkv and residual there
(the norm kernels update the residual in place, so that copy is usually none). Inside a piece everything is
graph memory; all pieces share one pool with the decode graphs, which is safe because graphs replay one at a
time on one stream and nothing a piece allocates outlives its replay.

`replay=False` runs the same pieces eagerly over the same buffers (the CPU tests check padding and the
buffers that way).
"""

from __future__ import annotations

import logging
import time

import torch

from modelgate.backends.llm.attention.metadata import AttentionMetadata

logger = logging.getLogger(__name__)


def token_counts(max_num_tokens: int) -> list[int]:
    """16, 32, 64, 128, 256, then every multiple of 128 up to max_num_tokens, and max_num_tokens itself: a step
    pads by at most 128 tokens past 256 (a quarter of its work at 512, an eighth at 1024)."""
    if max_num_tokens < 1:
        return []
    counts = {count for count in (16, 32, 64, 128, *range(256, max_num_tokens + 1, 128)) if count <= max_num_tokens}
    return sorted(counts | {max_num_tokens})


def buffer_bytes(config, dtype: torch.dtype, num_tokens: int) -> int:
    """What StepGraphs' static buffers take at num_tokens rows (a DecoderConfig's model in `dtype`): inputs, qkv,
    residual, attention output and hidden states, as its __init__ allocates them."""
    qkv_width = (config.num_heads + 2 * config.num_kv_heads) * config.head_dim
    element = torch.finfo(dtype).bits // 8
    return num_tokens * ((qkv_width + config.num_heads * config.head_dim + 2 * config.hidden_size) * element + 3 * 8)


class StepGraphs:
    """Non-decode forwards at fixed token counts, replayed piece by piece around an eager attention."""

    def __init__(
        self,
        model,
        kv_caches: list[torch.Tensor],
        kv_scales: list[torch.Tensor | None] | None,
        *,
        token_counts: list[int],
        device: torch.device,
        replay: bool = True,
        pool=None,
    ):
        """model: a DecoderForCausalLM whose attention implementation has write_kv and attend_written (the triton
        one). pool: the CUDA graph memory pool to capture into (shared with the decode graphs); None: a new one."""
        if not token_counts:
            raise ValueError("StepGraphs needs at least one token count")
        self.model = model
        self.layers = list(model.layers)
        self.kv_caches = kv_caches
        self.kv_scales = kv_scales if kv_scales is not None else [None] * len(self.layers)
        self.token_counts = sorted(set(token_counts))
        self.max_num_tokens = self.token_counts[-1]
        self.device = device
        self.replay = replay
        self._pool = pool
        attention = self.layers[0].self_attn
        c, rows, dtype = model.config, self.max_num_tokens, model.embed_tokens.weight.dtype
        self._attention = attention.attention_impl
        # Static inputs: a step's values are copied in from a pinned host twin (one copy).
        self._longs = torch.zeros((3, rows), dtype=torch.long, device=device)
        self.token_ids, self.positions, self.slot_mapping = self._longs[0], self._longs[1], self._longs[2]
        self.slot_mapping.fill_(-1)
        self._host_longs = torch.zeros((3, rows), dtype=torch.long, pin_memory=device.type == "cuda")
        self._host_np = self._host_longs.numpy()
        self._copies_done = torch.cuda.Event() if device.type == "cuda" else None
        # What crosses the pieces' boundaries (see the module docstring).
        q_width = attention.num_heads * attention.head_dim
        qkv_width = q_width + 2 * attention.num_kv_heads * attention.head_dim
        self._qkv = torch.zeros((rows, qkv_width), dtype=dtype, device=device)
        self._residual = torch.zeros((rows, c.hidden_size), dtype=dtype, device=device)
        self._attended = torch.zeros((rows, q_width), dtype=dtype, device=device)
        self._hidden = torch.zeros((rows, c.hidden_size), dtype=dtype, device=device)
        self._graphs: dict[int, list[torch.cuda.CUDAGraph]] = {}

    def supports(self, num_tokens: int) -> bool:
        return 0 < num_tokens <= self.max_num_tokens

    def padded_count(self, num_tokens: int) -> int:
        for count in self.token_counts:
            if count >= num_tokens:
                return count
        raise ValueError(f"{num_tokens} tokens exceed the largest captured token count {self.max_num_tokens}")

    @property
    def num_pieces(self) -> int:
        return len(self.layers) + 1

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every piece at every token count, largest first so that the smaller reuse its memory. Each
        count's pieces run eagerly once first (Triton compiles and cuBLAS picks its algorithms outside a
        capture); nothing reaches the KV cache (every slot -1) and the attention is not part of a capture."""
        if not self.replay:
            return
        started = time.perf_counter()
        pool = self._pool if self._pool is not None else torch.cuda.graph_pool_handle()
        self.slot_mapping.fill_(-1)
        for count in reversed(self.token_counts):
            for index in range(self.num_pieces):
                self._piece(index, count)
            torch.cuda.synchronize(self.device)
            graphs = []
            for index in range(self.num_pieces):
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self._piece(index, count)
                graphs.append(graph)
            self._graphs[count] = graphs
        torch.cuda.synchronize(self.device)
        logger.info(
            "captured piecewise step graphs at %d token counts (%s, %d pieces each) in %.1f s",
            len(self._graphs),
            self.token_counts,
            self.num_pieces,
            time.perf_counter() - started,
        )

    @torch.inference_mode()
    def run(
        self,
        token_ids: list[int],
        positions: list[int],
        slots: list[int],
        metadata: AttentionMetadata,
        device_tokens: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """Final hidden states [T, hidden_size] of a step of T = len(token_ids) tokens (a view of a static buffer,
        valid until the next run); the step's K/V land in the cache. metadata: the step's, for the attention.
        device_tokens: (rows, tokens) on the device, written over those rows of token_ids once they are staged
        (a step launched ahead: its decodes' tokens were sampled by the step still running)."""
        num_tokens = len(token_ids)
        count = self.padded_count(num_tokens)
        self._stage(token_ids, positions, slots, count)
        if device_tokens is not None:
            self.token_ids.index_copy_(0, *device_tokens)
        if not self.replay:
            return self._run_eagerly(num_tokens, count, metadata)
        graphs = self._graphs[count]
        for index, graph in enumerate(graphs):
            graph.replay()
            if index < len(self.layers):
                self._attend(index, num_tokens, metadata)
        return self._hidden[:num_tokens]

    def _run_eagerly(self, num_tokens: int, count: int, metadata: AttentionMetadata) -> torch.Tensor:
        for index in range(self.num_pieces):
            self._piece(index, count)
            if index < len(self.layers):
                self._attend(index, num_tokens, metadata)
        return self._hidden[:num_tokens]

    def _stage(self, token_ids: list[int], positions: list[int], slots: list[int], count: int) -> None:
        if self._copies_done is not None:
            self._copies_done.synchronize()  # the previous step's copy has left the staging buffer
        n, host = len(token_ids), self._host_np
        host[0, :n] = token_ids
        host[1, :n] = positions
        host[2, :n] = slots
        host[:2, n:count] = 0
        host[2, n:count] = -1  # padding rows write no K/V
        self._longs[:, :count].copy_(self._host_longs[:, :count], non_blocking=True)
        if self._copies_done is not None:
            self._copies_done.record()

    def _piece(self, index: int, count: int) -> None:
        """Piece `index` at `count` rows (see the module docstring), from and into the static buffers."""
        residual = self._residual[:count]
        if index == 0:
            hidden, carried = self.model.embed_tokens(self.token_ids[:count]), None
        else:
            hidden, carried = self.layers[index - 1].attention_output(self._attended[:count], residual)
        if index == len(self.layers):
            normed, _ = self.model.norm(hidden, carried)
            self._hidden[:count].copy_(normed)
            return
        qkv, carried = self.layers[index].attention_input(
            hidden,
            carried,
            self.positions[:count],
            self.model.rotary,
            self.kv_caches[index],
            self.slot_mapping[:count],
            self.kv_scales[index],
        )
        self._qkv[:count].copy_(qkv)
        if carried.data_ptr() != residual.data_ptr():  # the norm kernel updated the buffer in place: no copy
            residual.copy_(carried)

    def _attend(self, index: int, num_tokens: int, metadata: AttentionMetadata) -> None:
        """Layer `index`'s attention of the real rows, eagerly, between its two pieces."""
        q, k, v = self.layers[index].self_attn.split_heads(self._qkv[:num_tokens])
        out = self._attended[:num_tokens].view(q.shape)
        self._attention.attend_written(q, k, v, self.kv_caches[index], metadata, self.kv_scales[index], out)
