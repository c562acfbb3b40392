"""Zeroed int32 counters for kernels whose last arriving program reduces the others' partials in the same launch.

A "last program reduces" kernel (kernels/fp8_gemv.py's split-K, kernels/paged_decode_attention.py's split-KV)
stores its partials, increments its group's counter (acq_rel), and the program that sees the final count
combines the partials and sets the counter back to 0. The counters are therefore 0 between launches and a
buffer can serve every launch of its owner on a device, eager or replayed from a CUDA graph.

Each owner (a kernel's name) has its own buffer per device, so two kernels never share a counter even if a
launch of one were left unfinished. All launches that use one buffer must run one after another: the owners
launch on the engine's single stream (where its graphs also replay) and without programmatic dependent launch.
"""

from __future__ import annotations

import torch

# (owner, device) -> int32 counters, all 0 between launches.
_BUFFERS: dict[tuple[str, torch.device], torch.Tensor] = {}
# Buffers replaced by a larger one. Never freed: a CUDA graph captured with a launch keeps the address it used.
_RETIRED: list[torch.Tensor] = []


def split_counters(owner: str, device: torch.device, num_counters: int) -> torch.Tensor:
    """`owner`'s counters on `device`: int32 [>= num_counters], all 0 between the owner's launches.

    The buffer is created (torch.zeros) by the first call on the device and replaced by a larger one, of the
    next power of two, when a call needs more. Neither may happen inside a CUDA-graph capture: a buffer made
    there would come from the graph's private pool and stay unzeroed until the first replay (the capture
    records the fill, it does not run it). Such a call raises RuntimeError instead of capturing a broken launch;
    run the owner eagerly with its largest shape before capturing (the model runner's warm-up and the eager run
    before each capture, largest batch first, do), or call this with the largest count first.
    """
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:N" name one buffer
        device = torch.device("cuda", torch.cuda.current_device())
    key = (owner, device)
    counters = _BUFFERS.get(key)
    if counters is not None and counters.numel() >= num_counters:
        return counters
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            f"{owner}: {num_counters} split counters on {device} do not exist yet and cannot be "
            f"created during CUDA-graph capture; run {owner} once eagerly with its largest shape "
            f"(or call modelgate.kernels.split_counters.split_counters) before capturing"
        )
    if counters is not None:
        _RETIRED.append(counters)
    size = 1 << max(num_counters - 1, 0).bit_length()  # the next power of two >= num_counters
    counters = _BUFFERS[key] = torch.zeros(size, dtype=torch.int32, device=device)
    return counters
