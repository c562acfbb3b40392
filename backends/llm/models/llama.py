"""The Llama-family decoder (Llama 2/3/3.1, Mistral, Qwen2): GQA, rotary, SwiGLU, RMSNorm.

Tokens of all sequences of a step are laid out back to back ([num_tokens, hidden]); the
attention implementation reads the step's AttentionMetadata and the layer's paged cache.

Norms, rotary embedding and SiLU-and-mul run the Triton kernels of kernels/ where they can (`wants_kernels`
decides once, from the device and the attention implementation); elsewhere their torch references.

FP8 fusion: with FP8 linears running the Triton kernels, the RMSNorms before qkv_proj and gate_up_proj and
the SiLU-and-mul before down_proj write the per-token FP8 quantization of their output (Fp8Rows) instead of
bf16 rows, and the Fp8Linear multiplies it as it is. `set_fp8_fusion` decides this once, after the linears
are replaced (backends/llm/layers/fp8_linear.py calls it), by setting each producer's `quantize_output`; the
forward code is the same either way: a producer's output goes to its one consumer, whatever its type.

At one token (a batch-1 decode) the two RMSNorms of a layer are deferred into the FP8 GEMVs after them
(`PendingNorm`: the GEMV normalizes its input row, one launch fewer each), and o_proj's GEMV prefetches its
weights while the attention runs.
"""

from __future__ import annotations

import torch
from torch import nn

from modelgate.backends.llm.attention.metadata import AttentionMetadata
from modelgate.backends.llm.attention.torch_paged import TorchPagedAttention
from modelgate.backends.llm.layers.activation import SiluAndMul
from modelgate.backends.llm.layers.linear import FusedLinear
from modelgate.backends.llm.layers.norms import PendingNorm, RMSNorm
from modelgate.backends.llm.models.model_config import DecoderConfig
from modelgate.backends.llm.models.rotary import RotaryEmbedding


def wants_kernels(attention_impl) -> bool:
    """Whether norms, rotary and SiLU-and-mul should use their Triton kernels (each still checks it can run).

    Yes on a GPU. On the CPU they could only run under the Triton interpreter, which exists for tests and is
    about a hundred times slower than torch: there they follow the attention, i.e. run only with the triton
    attention backend (the tests that check the kernels in the model choose it); the plain CPU engine keeps
    the torch code.
    """
    return torch.get_default_device().type != "cpu" or not isinstance(attention_impl, TorchPagedAttention)


class Attention(nn.Module):
    def __init__(self, config: DecoderConfig, attention_impl, dtype: torch.dtype):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = FusedLinear(config.hidden_size, [q_size, kv_size, kv_size], config.qkv_bias, dtype)
        self.o_proj = FusedLinear(q_size, [config.hidden_size], config.o_bias, dtype)
        self.attention_impl = attention_impl

    def forward(
        self,
        hidden,
        positions,
        rotary: RotaryEmbedding,
        kv_cache,
        metadata: AttentionMetadata,
        kv_scales: torch.Tensor | None = None,
    ):
        # hidden: [num_tokens, hidden_size], or its Fp8Rows when input_layernorm quantizes for an FP8 qkv_proj
        # kv_scales: [2, num_blocks, block_size, num_kv_heads] float32 for an FP8 cache (Triton attention only)
        qkv = self.qkv_proj(hidden)
        num_tokens = qkv.shape[0]
        q, k, v = self.split_heads(qkv)
        # Only the Triton attention takes these (TorchPagedAttention.forward has neither argument).
        options = {} if kv_scales is None else {"kv_scales": kv_scales}
        # An attention whose KV write can rotate gets the rotation instead (one launch fewer per layer); k then
        # stays unrotated, which is fine: only the attention reads it, and it reads K from the cache.
        fuses = getattr(self.attention_impl, "fuses_rotary", False)
        rotation = rotary.rotation(positions) if fuses else None
        if rotation is None:
            q, k = rotary(positions, q, k)
        else:
            options["rotation"] = rotation
        out = self.attention_impl.forward(q, k, v, kv_cache, metadata, **options)
        return self.o_proj(out.reshape(num_tokens, -1))

    def split_heads(self, qkv: torch.Tensor):
        """Views q [T, num_heads, head_dim], k and v [T, num_kv_heads, head_dim] of a qkv_proj output [T, width]."""
        num_tokens = qkv.shape[0]
        kv_size = self.num_kv_heads * self.head_dim
        q, k, v = qkv.split([self.num_heads * self.head_dim, kv_size, kv_size], -1)
        return (
            q.view(num_tokens, self.num_heads, self.head_dim),
            k.view(num_tokens, self.num_kv_heads, self.head_dim),
            v.view(num_tokens, self.num_kv_heads, self.head_dim),
        )

    def project_and_write(self, normed, positions, rotary: RotaryEmbedding, kv_cache, slot_mapping, kv_scales=None):
        """The attention's work before it reads the cache: qkv_proj, q and k rotated (in place in the returned
        [T, width] qkv), k and v written to the cache. Its attention implementation must have `write_kv`."""
        qkv = self.qkv_proj(normed)
        q, k, v = self.split_heads(qkv)
        rotated_q, rotated_k = rotary(positions, q, k)
        if rotated_q is not q:  # the torch rotation returns new tensors: keep qkv the one result
            q.copy_(rotated_q)
            k.copy_(rotated_k)
        self.attention_impl.write_kv(k, v, kv_cache, slot_mapping, kv_scales)
        return qkv


class MLP(nn.Module):
    """SwiGLU: down_proj(silu(gate) * up), gate | up = gate_up_proj(x).

    Single-token fusion (`set_silu_fusion`): an FP8 gate_up_proj running its GEMV kernel applies SiLU-and-mul in
    the GEMV's epilogue when a step has one token and returns the [1, I] product in the model's dtype; forward
    then skips act_fn (the output's width, I instead of 2 * I, says which happened) and down_proj reads that
    row unquantized. At more tokens, where act_fn would quantize for down_proj and Fp8Linear.silu_in_gemm is on,
    gate_up_proj's GEMM applies it and quantizes too, and returns Fp8Rows [M, I] (kernels/fp8_gemm_silu.py),
    which act_fn skips too.
    """

    def __init__(self, config: DecoderConfig, dtype: torch.dtype, use_kernels: bool = True):
        super().__init__()
        size = self.intermediate_size = config.intermediate_size
        self.gate_up_proj = FusedLinear(config.hidden_size, [size, size], config.mlp_bias, dtype)
        self.down_proj = FusedLinear(size, [config.hidden_size], config.mlp_bias, dtype)
        self.act_fn = SiluAndMul(use_kernels)

    def set_silu_fusion(self, enabled: bool = True) -> None:
        """Let gate_up_proj apply SiLU-and-mul at one token where it can and act_fn runs its kernel too (the
        torch activation stays where the model keeps torch code). Duck-typed: FusedLinear has no such flag."""
        if hasattr(self.gate_up_proj, "fuse_silu_and_mul"):
            self.gate_up_proj.fuse_silu_and_mul = (
                enabled and self.gate_up_proj.can_fuse_silu_and_mul and self.act_fn.runs_kernel
            )
            self.gate_up_proj.silu_output_fp8 = self.gate_up_proj.fuse_silu_and_mul and self.act_fn.quantize_output

    def forward(self, x):
        # x: [num_tokens, hidden_size], or its Fp8Rows (post_attention_layernorm quantizing for gate_up_proj)
        gate_up = self.gate_up_proj(x)  # [num_tokens, 2 * I]; or activated: [1, I], Fp8Rows (the class docstring)
        is_activated = not isinstance(gate_up, torch.Tensor) or gate_up.shape[-1] == self.intermediate_size
        activated = gate_up if is_activated else self.act_fn(gate_up)
        return self.down_proj(activated)


def _reads_fp8_rows(linear: nn.Module) -> bool:
    """True for a linear that multiplies per-token FP8 activations (Fp8Rows) with kernels: an Fp8Linear that
    runs them. Duck-typed so that this module does not import kernels/ (they load after TRITON_INTERPRET)."""
    return getattr(linear, "accepts_fp8_input", False)


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig, attention_impl, dtype: torch.dtype):
        super().__init__()
        use_kernels = wants_kernels(attention_impl)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, use_kernels)
        self.self_attn = Attention(config, attention_impl, dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, use_kernels)
        self.mlp = MLP(config, dtype, use_kernels)
        self.defers_norms = False  # see set_fp8_fusion

    def set_fp8_fusion(self, enabled: bool = True) -> None:
        """Each producer quantizes its output for the FP8 GEMM that reads it where both run kernels."""
        pairs = (
            (self.input_layernorm, self.self_attn.qkv_proj),
            (self.post_attention_layernorm, self.mlp.gate_up_proj),
            (self.mlp.act_fn, self.mlp.down_proj),
        )
        for producer, consumer in pairs:
            producer.quantize_output = enabled and producer.can_quantize_output and _reads_fp8_rows(consumer)
        # At one token gate_up_proj may also take over act_fn, whose quantize_output then does not apply.
        self.mlp.set_silu_fusion(enabled)
        self.defers_norms = enabled and all(
            norm.kernel is not None and getattr(linear, "can_normalize_input", False) for norm, linear in pairs[:2]
        )
        if hasattr(self.self_attn.o_proj, "prefetch_weights"):
            self.self_attn.o_proj.prefetch_weights = enabled

    def _normed(self, norm: RMSNorm, hidden, residual):
        """(norm's output, new residual); at one token with defers_norms a PendingNorm that the next linear
        computes, and the buffer it fills with the new residual."""
        if self.defers_norms and hidden.shape[0] == 1:
            pending = PendingNorm.of(norm, hidden, residual)
            return pending, pending.new_residual
        return norm(hidden, residual)

    def forward(self, hidden, residual, positions, rotary, kv_cache, metadata, kv_scales=None):
        normed, residual = self._normed(self.input_layernorm, hidden, residual)
        hidden = self.self_attn(normed, positions, rotary, kv_cache, metadata, kv_scales)
        normed, residual = self._normed(self.post_attention_layernorm, hidden, residual)
        return self.mlp(normed), residual

    # The layer in two halves around the attention's read of the cache, for the piecewise step graphs
    # (backends/llm/step_graphs.py), which capture everything but that read: forward is
    # attention_output(attend(*attention_input(...))) with the attention in the middle.

    def attention_input(self, hidden, residual, positions, rotary, kv_cache, slot_mapping, kv_scales=None):
        """(qkv [T, width] with q and k rotated, new residual); the step's K/V are in the cache."""
        normed, residual = self.input_layernorm(hidden, residual)
        qkv = self.self_attn.project_and_write(normed, positions, rotary, kv_cache, slot_mapping, kv_scales)
        return qkv, residual

    def attention_output(self, attended, residual):
        """(hidden, residual) after o_proj and the MLP; attended: the attention's output [T, num_heads * head_dim]."""
        hidden = self.self_attn.o_proj(attended)
        normed, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(normed), residual


class DecoderForCausalLM(nn.Module):
    """Weights are created empty; `modelgate.backends.llm.models.weight_loader` fills them.

    A pipeline stage (backends/llm/parallel/stages.py) builds it from a config of its layers only, with
    `is_first_stage` (it embeds the tokens; otherwise it takes the previous stage's hidden states and residual)
    and `is_last_stage` (it ends with the final norm and holds the LM head; otherwise its forward returns the
    hidden states and residual for the next stage). The modules a stage does not use are not built: embed_tokens
    is None on a stage that neither embeds nor has a tied LM head; norm is None before the last stage."""

    gather_logits = None  # tensor parallelism (backends/llm/parallel/layers.py) joins the ranks' vocab slices

    def __init__(
        self,
        config: DecoderConfig,
        attention_impl,
        dtype: torch.dtype,
        max_positions: int,
        is_first_stage: bool = True,
        is_last_stage: bool = True,
    ):
        super().__init__()
        self.config = config
        self.is_first_stage, self.is_last_stage = is_first_stage, is_last_stage
        self.embed_tokens = None
        if is_first_stage or (is_last_stage and config.tie_word_embeddings):
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
            self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(DecoderLayer(config, attention_impl, dtype) for _ in range(config.num_layers))
        use_kernels = wants_kernels(attention_impl)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, use_kernels) if is_last_stage else None
        self.rotary = RotaryEmbedding(config, max_positions, use_kernels)
        if is_last_stage and not config.tie_word_embeddings:
            self.lm_head_weight = nn.Parameter(
                torch.empty(config.vocab_size, config.hidden_size, dtype=dtype), requires_grad=False
            )

    def set_fp8_fusion(self, enabled: bool = True) -> None:
        """Let norms and SiLU-and-mul emit FP8 for the FP8 linears after them (see the module docstring);
        enabled=False restores bf16 outputs everywhere (the unfused path, for comparisons)."""
        for layer in self.layers:
            layer.set_fp8_fusion(enabled)

    def forward(
        self,
        token_ids,
        positions,
        kv_caches: list[torch.Tensor],
        metadata: AttentionMetadata,
        kv_scales: list[torch.Tensor | None] | None = None,
        intermediate: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        # token_ids, positions: [num_tokens] -> hidden states [num_tokens, hidden_size]
        # kv_scales: one per layer for an FP8 KV cache (None: caches in the model's dtype)
        # intermediate: after the first pipeline stage, the previous stage's (hidden, residual) [num_tokens,
        # hidden_size] each, in place of the embedding; before the last stage the result is such a pair.
        if self.is_first_stage:
            hidden, residual = self.embed_tokens(token_ids), None
        else:
            hidden, residual = intermediate
        scales = kv_scales if kv_scales is not None else [None] * len(self.layers)
        for layer, kv_cache, layer_scales in zip(self.layers, kv_caches, scales):
            hidden, residual = layer(hidden, residual, positions, self.rotary, kv_cache, metadata, layer_scales)
        if not self.is_last_stage:
            return hidden, residual
        hidden, _ = self.norm(hidden, residual)
        return hidden

    def compute_logits(self, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """float32 logits [num_rows, vocab_size] of hidden [num_rows, hidden_size]; into `out` where given (a CUDA
        graph's static buffer: its captures then share one logits buffer instead of one each)."""
        weight = self.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head_weight
        logits = nn.functional.linear(hidden, weight)
        if self.gather_logits is not None:
            logits = self.gather_logits(logits)
        if out is None:
            return logits.float()
        return out.copy_(logits)
