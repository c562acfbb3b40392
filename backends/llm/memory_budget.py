"""What an engine given a byte budget (by the server's memory ledger) has spent of it so far.

The budget covers everything the engine process holds on its GPU, the CUDA context included. NVML's figure
of the whole GPU, read before this process first touches CUDA and again after the weights are in, tells what
the process took: the server loads nothing else on that GPU meanwhile (its ledger locks the GPU for the
load). Without NVML, torch's reserved bytes stand in, which miss the CUDA context (some hundreds of MiB).
"""

from __future__ import annotations

import logging

import torch

from modelgate.core.nvml import gpu_used_bytes

logger = logging.getLogger(__name__)


class BudgetMeter:
    def __init__(self, device: torch.device):
        """Create before this process allocates anything on `device`."""
        self.device = device
        self._index = device.index if device.index is not None else 0
        self._used_at_start = gpu_used_bytes(self._index) if device.type == "cuda" else None

    def spent_bytes(self) -> int:
        """Bytes this process holds on its GPU now."""
        if self._used_at_start is not None:
            used = gpu_used_bytes(self._index)
            if used is not None:
                return max(used - self._used_at_start, torch.cuda.memory_reserved(self.device))
        logger.warning("NVML unavailable: the engine's memory budget leaves out its CUDA context")
        return torch.cuda.memory_reserved(self.device)

    def free_for_kv(self, budget_bytes: int | None, utilization: float) -> float:
        """What the KV cache, the activations and the graphs may take now that the weights are in: the rest of
        the budget, or without one, what the GPU has free beyond (1 - utilization) of it."""
        torch.cuda.empty_cache()
        if budget_bytes is not None:
            return budget_bytes - self.spent_bytes()
        free, total = torch.cuda.mem_get_info(self.device)
        return free - (1 - utilization) * total


def kv_blocks(free: float, step_peak: int, graphs_peak: int, bytes_per_block: int, block_size: int) -> int:
    """KV blocks in `free` bytes once the activations' and graphs' peaks are kept aside; ValueError if none fit."""
    blocks = int((free - step_peak - graphs_peak) // bytes_per_block)
    if blocks < 1:
        raise ValueError(
            f"no GPU memory left for the KV cache ({free / 2**30:.1f} GiB left after the weights, activations "
            f"need {(step_peak + graphs_peak) / 2**30:.1f} GiB, of which CUDA graphs {graphs_peak / 2**30:.1f}); raise "
            f"gpu_memory_utilization or lower max_num_batched_tokens (or the graphs' cuda_graph_max_num_tokens and "
            f"cuda_graph_max_batch_size)"
        )
    logger.info(
        "KV cache: %d blocks of %d tokens (%.1f GiB); activations peak %.2f GiB, graphs %.2f GiB",
        blocks,
        block_size,
        blocks * bytes_per_block / 2**30,
        step_peak / 2**30,
        graphs_peak / 2**30,
    )
    return blocks
