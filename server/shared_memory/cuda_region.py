"""A CUDA shared-memory region: device memory a client allocated and shared by a CUDA IPC handle."""

from __future__ import annotations

import warnings

from modelgate.core.errors import InvalidArgumentError
from modelgate.server.shared_memory.cuda_ipc import open_ipc_memory


class CudaRegion:
    """`byte_size` bytes at the start of the client's allocation on `cuda:device_id`, as a torch uint8 tensor."""

    def __init__(self, name: str, device_id: int, byte_size: int, memory):
        self.name = name
        self.device_id = device_id
        self.byte_size = byte_size
        self._memory = memory  # [byte_size] torch.uint8 on the device

    def status(self) -> dict:
        return {"name": self.name, "device_id": self.device_id, "byte_size": self.byte_size}

    def read(self, start: int, size: int, where: str):
        """A uint8 CUDA tensor viewing `size` bytes at `start` (no copy; bounds checked by the caller)."""
        return self._memory[start : start + size]

    def write(self, start: int, data, where: str) -> None:
        """Copy `data` (a numpy array or a torch tensor of bytes, host or device) to `start`."""
        import torch

        if isinstance(data, memoryview):
            with warnings.catch_warnings():  # read-only host bytes: torch warns, but they are only read from
                warnings.simplefilter("ignore", UserWarning)
                data = torch.frombuffer(data, dtype=torch.uint8) if data.nbytes else torch.empty(0, dtype=torch.uint8)
        target = self._memory[start : start + data.numel()]
        target.copy_(data.reshape(-1))
        # The response goes out when this returns: the client reads the region then.
        torch.cuda.current_stream(target.device).synchronize()


def open_cuda_region(name: str, raw_handle: bytes, device_id: int, byte_size: int) -> CudaRegion:
    if byte_size < 0:
        raise InvalidArgumentError(f"cuda shared memory region '{name}': byte_size must be >= 0, got {byte_size}")
    memory = open_ipc_memory(raw_handle, device_id)
    if byte_size > memory.numel():
        raise InvalidArgumentError(
            f"cuda shared memory region '{name}': byte_size {byte_size} is larger than the allocation behind the "
            f"handle ({memory.numel()} bytes)"
        )
    return CudaRegion(name, device_id, byte_size, memory[:byte_size])
