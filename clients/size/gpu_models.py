"""The GPUs a sizing packs models onto: cards named from a table, sizes given outright, or this machine's GPUs
through NVML.

A card's memory here is what NVML (and nvidia-smi) report as its total, a little under the datasheet's figure:
that total is what the server's memory ledger takes as a GPU's size, so a plan made from the table matches the
server on that card. H100 and H200 are the totals this project's machines show; the others are the totals that
public nvidia-smi listings of those cards show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelgate.core.byte_sizes import ALLOWED, parse_bytes
from modelgate.core.nvml import gpu_total_bytes, nvml_gpus

MIB = 2**20
GPU_MEMORY_BYTES = {
    "H100-80GB": 81559 * MIB,
    "H200-141GB": 143771 * MIB,
    "A100-80GB": 81920 * MIB,
    "A100-40GB": 40960 * MIB,
    "L40S-48GB": 46068 * MIB,
    "L4-24GB": 23034 * MIB,
    "A10-24GB": 23028 * MIB,
    "T4-16GB": 15360 * MIB,
}
_COUNT = re.compile(r"^\s*(\d+)\s*[xX]\s*(.+)$")


@dataclass(frozen=True)
class PlannedGpu:
    id: int  # CUDA's number for it: what instance_group.gpus lists
    name: str
    total_bytes: int

    @property
    def label(self) -> str:
        return f"GPU {self.id}"


def known_gpu_names() -> str:
    return ", ".join(GPU_MEMORY_BYTES)


def parse_gpus(values: list[str]) -> list[PlannedGpu]:
    """GPUs from `--gpu` values, numbered in order: a card from the table (`H100-80GB`, or `H100` where one card
    has that name), a size (`40GiB`), either after a count (`2xH100-80GB`). ValueError saying what is allowed."""
    gpus: list[PlannedGpu] = []
    for value in values:
        match = _COUNT.match(value)
        count, spec = (int(match.group(1)), match.group(2)) if match else (1, value)
        if count < 1:
            raise ValueError(f"--gpu '{value}': a count of GPUs must be at least 1")
        name, total = _one_gpu(spec.strip())
        first = len(gpus)
        gpus.extend(PlannedGpu(first + k, name, total) for k in range(count))
    return gpus


def this_machines_gpus() -> list[PlannedGpu]:
    """The GPUs this process sees, in CUDA's numbering, at NVML's totals; [] without a GPU or a driver."""
    return [PlannedGpu(gpu.cuda_id, gpu.name, gpu_total_bytes(gpu)) for gpu in nvml_gpus()]


def _one_gpu(spec: str) -> tuple[str, int]:
    by_folded = {name.casefold(): name for name in GPU_MEMORY_BYTES}
    folded = spec.casefold().removeprefix("nvidia").strip(" -")
    if folded in by_folded:
        name = by_folded[folded]
        return name, GPU_MEMORY_BYTES[name]
    # A family name alone (`H100`) stands for its card where the table has one card of that family.
    family = [name for key, name in by_folded.items() if key.split("-")[0] == folded]
    if len(family) == 1:
        return family[0], GPU_MEMORY_BYTES[family[0]]
    try:
        total = parse_bytes(spec)
    except ValueError:
        choices = f"one of {', '.join(family)}" if family else f"a card ({known_gpu_names()})"
        raise ValueError(f"--gpu '{spec}' is neither {choices} nor {ALLOWED}") from None
    return spec, total
