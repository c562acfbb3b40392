"""Which GPUs this process sees, asked of torch only when a config needs to know."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def visible_gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
