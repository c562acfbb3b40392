"""Turning one rank's model (built from `Shard.local_config`, loaded with its checkpoint slices) into its part
of the tensor-parallel model, after loading, the way fp8_linear.py swaps linears:

- o_proj and down_proj (row-parallel: each rank multiplies its input columns) get a forward hook that sums
  their output over the stage's tensor-parallel ranks; their bias stays on tensor-parallel rank 0 only, so
  that it is added once. The linears
  themselves stay what they are (FusedLinear or Fp8Linear, FP8 fusion flags and all).
- embed_tokens becomes a VocabParallelEmbedding over the same weight (this rank's vocabulary rows).
- the model's `gather_logits` joins the ranks' vocabulary slices of the logits (each rank multiplies its rows
  of the LM head, tied or not) and drops the padding.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from modelgate.backends.llm.parallel.sharding import Shard
from modelgate.backends.llm.parallel.state import TensorParallel

ROW_PARALLEL_LINEARS = ("self_attn.o_proj", "mlp.down_proj")


class VocabParallelEmbedding(nn.Module):
    """Rows [start, start + num_rows) of the vocabulary; other token ids give zeros here, and the all-reduce
    adds the rank that holds them."""

    def __init__(self, weight: nn.Parameter, start: int, num_real_rows: int, tp: TensorParallel):
        super().__init__()
        self.weight = weight  # [vocab_rows, hidden_size], rows past num_real_rows zero padding
        self.start, self.num_real_rows, self.tp = start, num_real_rows, tp

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        # token_ids: [num_tokens] -> [num_tokens, hidden_size]
        local = token_ids - self.start
        outside = (local < 0) | (local >= self.num_real_rows)
        hidden = nn.functional.embedding(local.masked_fill(outside, 0), self.weight)
        hidden.masked_fill_(outside.unsqueeze(-1), 0)
        return self.tp.all_reduce(hidden)


def parallelize(model: nn.Module, shard: Shard, tp: TensorParallel) -> None:
    """Make `model` (this rank's loaded shard) compute its part of the whole model's forward and logits."""
    hook = _all_reduce_hook(tp)
    for layer in model.layers:
        for path in ROW_PARALLEL_LINEARS:
            linear = layer.get_submodule(path)
            if linear.bias is not None and tp.tp_rank != 0:
                linear.bias.data.zero_()
            linear.register_forward_hook(hook)
    # A pipeline stage may hold neither the embedding nor the LM head (DecoderForCausalLM's docstring).
    has_lm_head = model.is_last_stage and not model.config.tie_word_embeddings
    with torch.no_grad():
        if model.embed_tokens is not None:
            model.embed_tokens.weight[shard.num_real_vocab_rows :].zero_()
        if has_lm_head:
            model.lm_head_weight[shard.num_real_vocab_rows :].zero_()
    if model.embed_tokens is not None:
        model.embed_tokens = VocabParallelEmbedding(
            model.embed_tokens.weight, shard.vocab_start, shard.num_real_vocab_rows, tp
        )
    vocab_size = shard.full.vocab_size
    model.gather_logits = lambda logits: tp.all_gather_last_dim(logits)[:, :vocab_size]
    # The logits' width is the whole vocabulary again (cuda_graphs.py sizes its logits buffer from it); the
    # rest of the config stays this rank's (heads, KV heads, intermediate size: what the layers were built with).
    model.config = dataclasses.replace(model.config, vocab_size=vocab_size)


def _all_reduce_hook(tp: TensorParallel):
    def hook(module, inputs, output):
        # output: [num_tokens, hidden_size], this rank's partial sum
        return tp.all_reduce(output)

    return hook
