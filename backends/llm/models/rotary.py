"""Rotary position embedding (GPT-NeoX style halves, as Llama uses) with Llama 3 / linear scaling.

Where kernels run (CUDA, or the CPU under TRITON_INTERPRET=1, decided once at construction from the caches'
device) and the model asks for them (`use_kernel`, see llama.wants_kernels), RotaryEmbedding rotates q and k
in place with `kernels.rotary_embedding` (one read and one write of each element, no new tensors);
elsewhere `_rotate` below, the kernel's reference, returns new tensors.

When it uses the kernel, the rotation can instead be fused into the attention's KV write
(`kernels.rotary_reshape_and_cache`, one launch fewer per layer): `rotation(positions)` hands out what that
kernel needs, and the model then does not call the RotaryEmbedding itself (see llama.Attention).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from modelgate.backends.llm.models.model_config import DecoderConfig, ModelConfigError


def inverse_frequencies(config: DecoderConfig) -> torch.Tensor:
    """[head_dim // 2] float32 inverse frequencies, scaled as `rope_scaling` says."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    scaling = config.rope_scaling
    kind = scaling.get("rope_type", "default")
    if kind == "default":
        return inv_freq.float()
    if kind == "linear":
        return (inv_freq / float(scaling["factor"])).float()
    if kind == "llama3":
        return _llama3(inv_freq, scaling).float()
    raise ModelConfigError(f"rope scaling type '{kind}' is not supported; supported: default, linear, llama3")


def _llama3(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    original = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= original / high) & (wavelen <= original / low)
    return torch.where(is_medium, smoothed, scaled)


def _kernel_for(device: torch.device):
    """modelgate.kernels.rotary_embedding.rotary_embedding when it can run on `device`, else None.

    Imported here, not at module import: kernels/ is read after tests set TRITON_INTERPRET (see model_runner).
    """
    from modelgate.kernels import rotary_embedding as module  # imports without triton too (can_run_on is then False)

    return module.rotary_embedding if module.can_run_on(device) else None


class Rotation(NamedTuple):
    """A RotaryEmbedding's rotation of one step, for a kernel that applies it itself (fused into the KV write)."""

    positions: torch.Tensor  # [num_tokens] int64
    cos: torch.Tensor  # [max_positions, head_dim // 2] float32
    sin: torch.Tensor  # [max_positions, head_dim // 2] float32


class RotaryEmbedding(torch.nn.Module):
    """Applies rotary embedding to q and k at given positions; cos/sin are cached up to max_positions."""

    def __init__(self, config: DecoderConfig, max_positions: int, use_kernel: bool = True):
        super().__init__()
        positions = torch.arange(max_positions, dtype=torch.float32)
        angles = torch.outer(positions, inverse_frequencies(config))  # [max_positions, head_dim // 2]
        self.register_buffer("cos", torch.cos(angles), persistent=False)
        self.register_buffer("sin", torch.sin(angles), persistent=False)
        self.kernel = _kernel_for(self.cos.device) if use_kernel else None

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated (q, k). With the kernel they are q and k themselves, rotated in place (q and k may be
        strided views of the qkv output); without it, new tensors.

        positions: [num_tokens] int64; q: [num_tokens, num_heads, head_dim]; k: [num_tokens, num_kv_heads, head_dim]
        """
        if self.kernel is not None:
            self.kernel(q, k, positions, self.cos, self.sin)
            return q, k
        cos = self.cos[positions].unsqueeze(1)
        sin = self.sin[positions].unsqueeze(1)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)

    def rotation(self, positions: torch.Tensor) -> Rotation | None:
        """The rotation at positions ([num_tokens] int64) for a fused kernel to apply, or None when this
        RotaryEmbedding rotates with torch (no kernel here, or the model chose the torch code): then call it.

        Fused only where the kernel would run anyway, so that fusing never changes which math runs."""
        if self.kernel is None:
            return None
        return Rotation(positions, self.cos, self.sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return rotated.to(x.dtype)
