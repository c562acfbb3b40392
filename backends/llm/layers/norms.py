"""RMSNorm in float32, as the Llama family computes it; the fused Triton kernel where it can run.

Where kernels run (CUDA, or the CPU under TRITON_INTERPRET=1, decided once at construction from the weight's
device) and the model asks for them (`use_kernel`, see llama.wants_kernels), forward is
`kernels.rms_norm.rms_norm`: residual add + norm in one pass, the residual updated in place. Elsewhere the
torch code below, which is also the kernel's reference. With `quantize_output` set (by
the model, when the next layer is an FP8 GEMM running kernels) the kernel emits the per-token FP8
quantization of its output (`Fp8Rows`) instead of the normalized rows.

`PendingNorm` defers a norm into the linear that reads its output: an FP8 linear running its single-token
GEMV normalizes the row itself (kernels.fp8_gemv.InputNorm), one launch fewer; any other consumer calls
`apply()`, which runs the norm as usual.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


def _kernel_for(device: torch.device):
    """modelgate.kernels.rms_norm.rms_norm when it can run on `device`, else None.

    Imported here, not at module import: kernels/ is read after tests set TRITON_INTERPRET (see model_runner).
    """
    from modelgate.kernels import rms_norm as module  # imports without triton too (can_run_on is then False)

    return module.rms_norm if module.can_run_on(device) else None


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, dtype: torch.dtype, use_kernel: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size, dtype=dtype), requires_grad=False)
        self.kernel = _kernel_for(self.weight.device) if use_kernel else None
        self.quantize_output = False  # see can_quantize_output

    @property
    def can_quantize_output(self) -> bool:
        """True when forward can return Fp8Rows (the fused kernel runs here)."""
        return self.kernel is not None

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """(normalized, new residual): with `residual`, normalizes x + residual and returns that sum.

        x, residual: [num_tokens, hidden]. normalized is a tensor in x's dtype, or Fp8Rows when
        quantize_output is set. The kernel path overwrites `residual` with the sum (and returns it): callers
        use the returned residual, never the one they passed.
        """
        if self.kernel is not None:
            return self.kernel(x, self.weight, self.eps, residual, out_fp8=self.quantize_output)
        if residual is not None:
            x = x + residual
        as_float = x.float()
        normalized = as_float * torch.rsqrt(as_float.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normalized.to(x.dtype), x


class PendingNorm(NamedTuple):
    """norm(hidden, residual), not computed yet: the linear that reads it computes it (see the module docstring).

    new_residual is the buffer that receives hidden + residual (hidden itself without a residual): the layer
    hands it on as the residual before the norm has run, so whoever computes the norm must fill it.
    """

    hidden: torch.Tensor  # [num_tokens, hidden_size]
    residual: torch.Tensor | None  # [num_tokens, hidden_size]; apply() may overwrite it (the layer is done with it)
    norm: RMSNorm
    new_residual: torch.Tensor  # [num_tokens, hidden_size]: a new buffer, or hidden when residual is None

    @classmethod
    def of(cls, norm: RMSNorm, hidden: torch.Tensor, residual: torch.Tensor | None) -> PendingNorm:
        return cls(hidden, residual, norm, hidden if residual is None else torch.empty_like(hidden))

    def apply(self):
        """The norm's output (a tensor, or Fp8Rows when the norm quantizes), new_residual filled."""
        normed, summed = self.norm(self.hidden, self.residual)
        if summed is not self.new_residual:
            self.new_residual.copy_(summed)
        return normed
