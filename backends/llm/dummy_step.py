"""A forward through the runner's model that touches no real KV cache: for warm-up and memory sizing.

`runner` is a ModelRunner (model, model_config, config, device, dtype, kv_cache_dtype, block_size); the caller
holds torch.inference_mode.
"""

from __future__ import annotations

import torch

from modelgate.backends.llm.step_layout import StepInputs, StepLayout


def dummy_layout(num_tokens: int, num_decodes: int, block_size: int, max_positions: int) -> StepLayout:
    """A step of num_tokens tokens: num_decodes one-token sequences that attend over one block and one more
    token (as decodes and chunks do: over cached keys), then one fresh prefill of the rest. Every slot is -1
    (nothing is written), every block table entry names block 0, positions wrap at max_positions (the rotary
    table's length; a dummy step may be longer than any sequence)."""
    if not 0 <= num_decodes <= num_tokens:
        raise ValueError(f"num_decodes must be in [0, num_tokens = {num_tokens}], got {num_decodes}")
    fresh = num_tokens - num_decodes
    query_start = list(range(num_decodes + 1)) + ([num_tokens] if fresh else [])
    context_lens = [block_size + 1] * num_decodes + ([fresh] if fresh else [])
    width = -(-max(context_lens) // block_size)
    positions = [block_size % max_positions] * num_decodes + [p % max_positions for p in range(fresh)]
    return StepLayout(
        token_ids=[0] * num_tokens,
        positions=positions,
        slots=[-1] * num_tokens,
        query_start=query_start,
        context_lens=context_lens,
        tables=[[0] * width for _ in context_lens],
        sample_rows=[],
        is_decode_only=num_tokens == len(context_lens),
        device_token_rows=[],
    )


def run_dummy_step(runner, num_tokens: int, num_sampled: int, num_decodes: int = 0) -> None:
    """A forward of dummy_layout(num_tokens, num_decodes, ...) and the logits of its last num_sampled rows, over a
    one-block dummy KV cache. Its tensors reach the device packed as a real step's do (StepInputs), so the
    kernels see the same argument alignments as when serving."""
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
    layout = dummy_layout(num_tokens, num_decodes, runner.block_size, runner.config.max_model_len)
    inputs = StepInputs.of(layout, device)
    # A pipeline stage after the first takes hidden states; zeros stand for them (nothing is sent: every rank
    # of a stage runs the same dummy steps, so their tensor-parallel collectives still meet).
    intermediate = None
    if not runner.model.is_first_stage:
        zeros = torch.zeros((num_tokens, c.hidden_size), dtype=runner.dtype, device=device)
        intermediate = (zeros, zeros.clone())
    hidden = runner.model(inputs.token_ids, inputs.positions, caches, inputs.metadata, kv_scales, intermediate)
    if not runner.model.is_last_stage:
        return
    logits = runner.model.compute_logits(hidden[-num_sampled:])
    logits.clone().argmax(-1)  # the sampler may work on a copy of the logits
