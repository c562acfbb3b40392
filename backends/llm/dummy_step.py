"""A forward through the runner's model that touches no real KV cache: for warm-up and memory sizing.

`runner` is a ModelRunner (model, model_config, config, device, dtype, kv_cache_dtype, block_size); the caller
holds torch.inference_mode.
"""

from __future__ import annotations

import torch

from modelgate.backends.llm.attention.metadata import AttentionMetadata


def run_dummy_step(runner, num_tokens: int, num_sampled: int) -> None:
    """A forward of num_tokens tokens of one sequence and the logits of its last num_sampled rows, over a
    one-block dummy KV cache that nothing is written to (slots -1) and whose block every table entry names."""
    from modelgate.kernels.reshape_and_cache import allocate_kv_cache

    c = runner.model_config
    caches, scales = [], []
    for _ in range(c.num_layers):
        cache, layer_scales = allocate_kv_cache(
            1, runner.block_size, c.num_kv_heads, c.head_dim, runner.kv_cache_dtype, runner.device
        )
        caches.append(cache.zero_())
        scales.append(None if layer_scales is None else layer_scales.fill_(1.0))
    kv_scales = scales if runner.kv_cache_dtype == torch.float8_e4m3fn else None
    device = runner.device
    metadata = AttentionMetadata(
        slot_mapping=torch.full((num_tokens,), -1, dtype=torch.long, device=device),
        query_start=torch.tensor([0, num_tokens], dtype=torch.int32, device=device),
        context_lens=torch.tensor([num_tokens], dtype=torch.int32, device=device),
        block_tables=torch.zeros((1, -(-num_tokens // runner.block_size)), dtype=torch.int32, device=device),
        query_start_cpu=[0, num_tokens],
        context_lens_cpu=[num_tokens],
        max_context_len=num_tokens,
        is_decode_only=num_tokens == 1,
    )
    token_ids = torch.zeros(num_tokens, dtype=torch.long, device=device)
    positions = torch.arange(num_tokens, device=device) % runner.config.max_model_len
    # A pipeline stage after the first takes hidden states; zeros stand for them (nothing is sent: every rank
    # of a stage runs the same dummy steps, so their tensor-parallel collectives still meet).
    intermediate = None
    if not runner.model.is_first_stage:
        zeros = torch.zeros((num_tokens, c.hidden_size), dtype=runner.dtype, device=device)
        intermediate = (zeros, zeros.clone())
    hidden = runner.model(token_ids, positions, caches, metadata, kv_scales, intermediate)
    if not runner.model.is_last_stage:
        return
    logits = runner.model.compute_logits(hidden[-num_sampled:])
    logits.clone().argmax(-1)  # the sampler may work on a copy of the logits
