"""FP8 (e4m3) W8A8 linear layers: per-output-channel weight scales, dynamic per-token activation scales.

`Fp8Linear` replaces a `FusedLinear` of attention and MLP (qkv_proj, o_proj, gate_up_proj, down_proj) either
after a bf16/fp16/fp32 checkpoint loaded (`quantize_linears`: each weight quantized per output channel, the
original freed) or before an FP8 checkpoint loads (`use_empty_fp8_linears`: the loader fills `weight` and
`weight_scale` slice by slice, as they are in the checkpoint). Embeddings, norms and lm_head stay unquantized.

Parameter names match the checkpoint's (`weight`, `weight_scale`, `bias`) and fused layers keep their
`part_sizes`, so the weight loader fills them like a FusedLinear.

Forward runs `kernels.fp8_gemm.fp8_linear_from_activations` (the Triton kernels) where they can run (a single
token goes through `kernels.fp8_gemv`, bound by the weight reads, on its unquantized activations): on CUDA,
or on the CPU under TRITON_INTERPRET=1 (tests); elsewhere its torch reference (the CPU engine without triton).
The output has the activations' dtype.

Forward also takes activations already quantized per token (`Fp8Rows`: values + scales, the convention of
`kernels.fp8_quant.quantize_per_token`) and multiplies them as they are (`fp8_linear`): the layer before it
(the fused RMSNorm, SiLU-and-mul) then writes FP8 directly, which saves the bf16 round trip and a
quantization kernel. Such output has the model's dtype (`out_dtype`). Replacing the linears ends with
`model.set_fp8_fusion()`, where the model decides, once, which producers quantize for which Fp8Linear.

A gate | up projection may also apply SiLU-and-mul itself (`fuse_silu_and_mul`, set by the model): a
single-token forward then returns silu(gate) * up, [1, I], from the GEMV's epilogue (see kernels/fp8_gemv.py);
with `silu_output_fp8` and `silu_in_gemm` too (the down projection reads FP8), a forward of Fp8Rows of more rows
returns that product quantized per token, Fp8Rows [M, I], from the GEMM's epilogue (kernels/fp8_gemm_silu.py).

Forward also takes a `PendingNorm` (the RMSNorm before it, deferred by the model where `can_normalize_input`):
the single-token GEMV normalizes the row itself and fills the pending norm's new residual; other shapes run
the norm first. `prefetch_weights` (set by the model on a linear that follows attention) lets the GEMV read
its weights into L2 while the attention, which leaves memory bandwidth idle, still runs.
"""

from __future__ import annotations

import torch
from torch import nn

from modelgate.backends.llm.layers.linear import FusedLinear
from modelgate.backends.llm.layers.norms import PendingNorm
from modelgate.kernels.fp8_gemm import (
    _fp8_gemm_kernel,
    fp8_linear,
    fp8_linear_from_activations,
    fp8_linear_from_activations_reference,
    fp8_linear_reference,
)
from modelgate.kernels.fp8_gemm_cublas import takes_scaled_mm
from modelgate.kernels.fp8_gemm_silu import SiluFusionPlan, fp8_linear_silu, plan_silu_fusion
from modelgate.kernels.fp8_gemv import InputNorm, fp8_gemv
from modelgate.kernels.fp8_quant import (
    FP8_DTYPE,
    HAS_TRITON,
    Fp8Rows,
    fp8_weight_from_checkpoint,
    is_interpreted,
)

# The FusedLinears of one decoder layer that FP8 replaces (dotted paths inside a DecoderLayer).
QUANTIZED_LINEARS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


def can_run_kernels(device: torch.device) -> bool:
    """True when the Triton FP8 GEMM can run on `device`: CUDA, or the CPU under TRITON_INTERPRET=1."""
    if not HAS_TRITON:
        return False
    return device.type == "cuda" or (device.type == "cpu" and is_interpreted(_fp8_gemm_kernel))


class Fp8Linear(nn.Module):
    """y = (quant(x) @ weight^T) * x_scale * weight_scale (+ bias); weight [N, K] e4m3, weight_scale [N] fp32."""

    # Whether Fp8Rows forwards of several rows take the GEMM with SiLU-and-mul in its epilogue (where
    # fuse_silu_and_mul and silu_output_fp8 are set): the same bits as the unfused path (interpreter and H100
    # tests). On the H100 (session 27, Llama-3-8B-shaped FP8): decode step at batch 64 / 256, context 192, 4.46 ->
    # 4.43 / 7.98 -> 7.91 ms; engine TTFT at 1,024 tokens 18.4 -> 18.2 ms (benchmarks/results/*_session27.log).
    # Set it False on the class or an instance for the unfused path.
    silu_in_gemm: bool = True

    def __init__(
        self,
        in_features: int,
        part_sizes: list[int],
        bias: torch.Tensor | None,
        device: torch.device,
        out_dtype: torch.dtype = torch.bfloat16,
    ):
        super().__init__()
        self.out_dtype = out_dtype  # of the output for Fp8Rows inputs (others give their own dtype)
        self.part_sizes = list(part_sizes)
        out_features = sum(part_sizes)
        self.weight = nn.Parameter(
            torch.zeros(out_features, in_features, dtype=FP8_DTYPE, device=device), requires_grad=False
        )
        self.weight_scale = nn.Parameter(
            torch.ones(out_features, dtype=torch.float32, device=device), requires_grad=False
        )
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.use_kernels = can_run_kernels(torch.device(device))
        # Single-token forwards return silu(gate) * up, [1, I] (see can_fuse_silu_and_mul); set by the model.
        self.fuse_silu_and_mul = False
        # With fuse_silu_and_mul: the product may leave quantized per token (its consumer reads Fp8Rows).
        self.silu_output_fp8 = False
        # The single-token GEMV L2-prefetches its weights while the kernel before it runs; set by the model.
        self.prefetch_weights = False

    @classmethod
    def empty(cls, linear: FusedLinear) -> Fp8Linear:
        """An unfilled Fp8Linear shaped like `linear` (for an FP8 checkpoint); keeps linear's bias tensor."""
        return cls(linear.weight.shape[1], linear.part_sizes, linear.bias, linear.weight.device, linear.weight.dtype)

    @classmethod
    def from_linear(cls, linear: FusedLinear) -> Fp8Linear:
        """`linear`'s weight quantized per output channel (its bias kept in its dtype)."""
        layer = cls.empty(linear)
        weight, scales = fp8_weight_from_checkpoint(linear.weight.data)
        layer.weight.data = weight
        layer.weight_scale.data = scales
        return layer

    def part_slice(self, index: int) -> slice:
        start = sum(self.part_sizes[:index])
        return slice(start, start + self.part_sizes[index])

    @property
    def accepts_fp8_input(self) -> bool:
        """True when forward multiplies Fp8Rows with the kernels (the layer before may then quantize for it)."""
        return self.use_kernels

    @property
    def can_fuse_silu_and_mul(self) -> bool:
        """True for a gate | up projection (two equal parts) whose single-token forward runs the GEMV kernel,
        which can then apply SiLU-and-mul in its epilogue."""
        return self.use_kernels and len(self.part_sizes) == 2 and self.part_sizes[0] == self.part_sizes[1]

    @property
    def can_normalize_input(self) -> bool:
        """True when a single-token forward normalizes a PendingNorm inside its GEMV (the norm must run its
        kernel too: the fused math is the kernel's)."""
        return self.use_kernels

    def forward(self, x: torch.Tensor | Fp8Rows | PendingNorm) -> torch.Tensor:
        # x: [..., in_features] bf16/fp16/fp32 -> [..., out_features] in x's dtype; or
        # Fp8Rows([num_tokens, in_features] e4m3, [num_tokens] fp32) -> [num_tokens, out_features] in out_dtype.
        # One token with fuse_silu_and_mul: [..., out_features / 2] = silu(gate) * up instead.
        # A PendingNorm: as the norm's output.
        bias = self.bias
        if isinstance(x, PendingNorm):
            if self.use_kernels and x.norm.kernel is not None and _is_one_row(x.hidden):
                norm = InputNorm(x.norm.weight, x.norm.eps, x.residual, None if x.residual is None else x.new_residual)
                return self._gemv(x.hidden, None, None, norm)
            x = x.apply()
        if isinstance(x, Fp8Rows):
            if self.use_kernels and _is_one_row(x.values):
                return self._gemv(x.values, x.scales, self.out_dtype)
            if (plan := self._silu_plan(x)) is not None:
                return fp8_linear_silu(x.values, x.scales, self.weight, self.weight_scale, self.out_dtype, plan)
            gemm = fp8_linear if self.use_kernels else fp8_linear_reference
            return gemm(x.values, x.scales, self.weight, self.weight_scale, bias, self.out_dtype)
        if self.use_kernels:
            rows = x.reshape(-1, x.shape[-1])
            if _is_one_row(rows):  # a batch-1 decode: the weight-bandwidth GEMV, on unquantized activations
                return self._gemv(rows, None, None).reshape(*x.shape[:-1], -1)
            return fp8_linear_from_activations(x, self.weight, self.weight_scale, bias)
        return fp8_linear_from_activations_reference(x, self.weight, self.weight_scale, bias)

    def _silu_plan(self, x: Fp8Rows) -> SiluFusionPlan | None:
        """How this forward of [M, K] FP8 rows returns silu(gate) * up quantized (fp8_linear_silu), or None (the
        plain GEMM, then act_fn): where the GEMM fp8_linear would run has a fused variant (kernels/fp8_gemm_silu.py).
        Where fp8_linear hands the GEMM to cuBLAS (kernels/fp8_gemm_cublas.py) the plain GEMM is taken: on the
        H100 cuBLAS's gate | up and act_fn's kernels beat the fused kernel at prefill sizes (that module's figures)."""
        if not (self.silu_in_gemm and self.fuse_silu_and_mul and self.silu_output_fp8 and self.use_kernels):
            return None
        if self.bias is not None or takes_scaled_mm(x.values, x.scales, self.weight, None, self.out_dtype, False):
            return None
        return plan_silu_fusion(x.values, self.weight)

    def _gemv(
        self,
        row: torch.Tensor,
        scale: torch.Tensor | None,
        out_dtype: torch.dtype | None,
        norm: InputNorm | None = None,
    ) -> torch.Tensor:
        # row: [1, in_features] (e4m3 with its [1] scale, or unquantized) -> [1, out_features or I]
        return fp8_gemv(
            row,
            self.weight,
            self.weight_scale,
            self.bias,
            scale,
            out_dtype,
            silu_and_mul=self.fuse_silu_and_mul,
            norm=norm,
            prefetch_weights=self.prefetch_weights,
        )


def _is_one_row(rows: torch.Tensor) -> bool:
    return rows.shape[0] == 1 and rows[0].is_contiguous()


def _replace_linears(model: nn.Module, make) -> None:
    for layer in model.layers:
        for path in QUANTIZED_LINEARS:
            parent_name, _, name = path.rpartition(".")
            parent = layer.get_submodule(parent_name)
            setattr(parent, name, make(getattr(parent, name)))
    # The layers before the new Fp8Linears may now quantize for them (decided once, here).
    model.set_fp8_fusion()


def quantize_linears(model: nn.Module) -> None:
    """Replace every FusedLinear of attention and MLP by its FP8 quantization; the originals are freed."""
    _replace_linears(model, lambda linear: linear if isinstance(linear, Fp8Linear) else Fp8Linear.from_linear(linear))
    if torch.cuda.is_available() and next(model.parameters()).is_cuda:
        torch.cuda.empty_cache()


def use_empty_fp8_linears(model: nn.Module) -> None:
    """Replace those FusedLinears by unfilled Fp8Linears before an FP8 checkpoint loads into them."""
    _replace_linears(model, Fp8Linear.empty)
