"""SiLU-and-mul, SwiGLU's activation: silu(gate) * up of a fused gate | up projection output.

Where kernels run (CUDA, or the CPU under TRITON_INTERPRET=1, decided once at construction) and the model asks
for them (`use_kernel`, see llama.wants_kernels), forward is
`kernels.silu_and_mul.silu_and_mul`: one read of gate | up and one write of the product, instead of torch's
silu temporary. Elsewhere the torch code below, which is also the kernel's reference. With
`quantize_output` set (by the model, when down_proj is an FP8 GEMM running kernels) the kernel emits the
per-token FP8 quantization of the product (`Fp8Rows`) instead of the product.
"""

from __future__ import annotations

import torch
from torch import nn


def _kernel_for(device: torch.device):
    """modelgate.kernels.silu_and_mul.silu_and_mul when it can run on `device`, else None.

    Imported here, not at module import: kernels/ is read after tests set TRITON_INTERPRET (see model_runner).
    """
    from modelgate.kernels import silu_and_mul as module  # imports without triton too (can_run_on is then False)

    return module.silu_and_mul if module.can_run_on(device) else None


class SiluAndMul(nn.Module):
    """[num_tokens, 2 * intermediate] gate | up -> [num_tokens, intermediate] silu(gate) * up (or Fp8Rows)."""

    def __init__(self, use_kernel: bool = True, device: torch.device | None = None):
        super().__init__()
        # No weights to take a device from: the one the model is built on (its torch.device(...) context).
        device = torch.device(device) if device is not None else torch.get_default_device()
        self.kernel = _kernel_for(device) if use_kernel else None
        self.quantize_output = False  # see can_quantize_output

    @property
    def runs_kernel(self) -> bool:
        """True when forward runs kernels.silu_and_mul (decided at construction), not the torch code."""
        return self.kernel is not None

    @property
    def can_quantize_output(self) -> bool:
        """True when forward can return Fp8Rows (the kernel runs here)."""
        return self.runs_kernel

    def forward(self, x: torch.Tensor):
        # x: [num_tokens, 2 * intermediate] -> [num_tokens, intermediate] in x's dtype, or Fp8Rows
        if self.kernel is not None:
            return self.kernel(x, out_fp8=self.quantize_output)
        gate, up = x.chunk(2, dim=-1)
        return nn.functional.silu(gate) * up
