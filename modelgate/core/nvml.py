"""NVML (nvidia-ml-py) for the whole server: initialized once, GPUs named as CUDA numbers them.

`nvml_gpus()` is empty where there is no NVIDIA driver (this is what makes the GPU metric families absent
rather than zero on a CPU machine). CUDA's device numbers follow CUDA_VISIBLE_DEVICES, NVML's do not: a GPU
listed there by index or UUID is found by it, and `NvmlGpu.cuda_id` is the number torch and the model
configs use. (CUDA orders GPUs fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID; on machines whose GPUs are
all of one kind, as servers are, both orders agree.)
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from functools import lru_cache

logger = logging.getLogger(__name__)

_init_lock = threading.Lock()


@dataclass(frozen=True)
class NvmlGpu:
    cuda_id: int  # the device number in CUDA (and in instance_group.gpus)
    uuid: str
    name: str
    handle: object  # pynvml's device handle


@lru_cache(maxsize=1)
def nvml_gpus() -> tuple[NvmlGpu, ...]:
    """The GPUs this process may use, in CUDA's numbering; () without NVML or a driver."""
    with _init_lock:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            by_index = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in by_index]
            names = [_text(pynvml.nvmlDeviceGetName(h)) for h in by_index]
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound / DriverNotLoaded...
            logger.debug("NVML unavailable: %s", exc)
            return ()
    visible = _visible_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)
    return tuple(NvmlGpu(k, uuids[i], names[i], by_index[i]) for k, i in enumerate(visible))


def _visible_indices(setting: str | None, uuids: list[str]) -> list[int]:
    """NVML indices of the GPUs CUDA_VISIBLE_DEVICES lets CUDA see, in CUDA's order (it stops at the first
    entry it cannot resolve, as CUDA does)."""
    if setting is None:
        return list(range(len(uuids)))
    indices = []
    for entry in (part.strip() for part in setting.split(",")):
        if entry.isdigit() and int(entry) < len(uuids):
            indices.append(int(entry))
        elif entry.startswith("GPU-") and any(u.startswith(entry) for u in uuids):
            indices.append(next(i for i, u in enumerate(uuids) if u.startswith(entry)))
        else:
            break
    return indices


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_used_bytes(cuda_id: int) -> int | None:
    """Bytes in use on the GPU CUDA numbers `cuda_id` (by every process); None without NVML."""
    gpu = next((g for g in nvml_gpus() if g.cuda_id == cuda_id), None)
    if gpu is None:
        return None
    import pynvml

    return int(pynvml.nvmlDeviceGetMemoryInfo(gpu.handle).used)


def gpu_total_bytes(gpu: NvmlGpu) -> int:
    """The GPU's memory as NVML reports its total (what nvidia-smi shows, a little under the datasheet's)."""
    import pynvml

    return int(pynvml.nvmlDeviceGetMemoryInfo(gpu.handle).total)
