"""Linear layers behind one seam, so quantized (FP8) versions can replace them at load time.

Fused projections (q|k|v, gate|up) keep the output sizes of their parts, so the weight
loader can copy each checkpoint tensor into its slice.
"""

from __future__ import annotations

import torch
from torch import nn


class FusedLinear(nn.Module):
    """y = x W^T (+ b), where W stacks the weights of several checkpoint projections."""

    def __init__(self, in_features: int, part_sizes: list[int], bias: bool, dtype: torch.dtype):
        super().__init__()
        self.part_sizes = list(part_sizes)
        out_features = sum(part_sizes)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype), requires_grad=False) if bias else None

    def part_slice(self, index: int) -> slice:
        start = sum(self.part_sizes[:index])
        return slice(start, start + self.part_sizes[index])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)
