"""`bench tensor --shared-memory system`: each input set of the bench's pool in a system shared-memory region of its
own, registered with the server once; requests then name the region instead of carrying the tensors (Triton's
shared-memory extension; the server must run with --allow-shared-memory true). As perf_analyzer's
`--shared-memory system` does for inputs; outputs still come back in the response."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import serialize_byte_tensor

from modelgate.clients.bench.tensor_inputs import InputSpec


@dataclass(frozen=True)
class RegionInput:
    """One input of one pool entry: where its bytes are."""

    spec: InputSpec
    region: str
    offset: int
    byte_size: int


class SharedInputPool:
    """The pool's input sets in shared memory. `create` registers them; `close` unregisters and destroys them."""

    def __init__(self):
        self.entries: list[list[RegionInput]] = []
        self._handles = []
        self._names: list[str] = []

    async def create(self, client, pool: list[list[tuple[InputSpec, np.ndarray]]]) -> None:
        for index, arrays in enumerate(pool):
            payloads = [_payload(array) for _, array in arrays]
            size = sum(len(p) for p in payloads)
            name = f"modelgate-bench-{os.getpid()}-{index}"
            handle = shm.create_shared_memory_region(name, f"/{name}", max(size, 1))
            self._handles.append(handle)
            entry, offset = [], 0
            for (spec, _), payload in zip(arrays, payloads):
                shm.set_shared_memory_region(handle, [np.frombuffer(payload, dtype=np.uint8)], offset=offset)
                entry.append(RegionInput(spec, name, offset, len(payload)))
                offset += len(payload)
            await client.register_system_shared_memory(name, f"/{name}", max(size, 1))
            self._names.append(name)
            self.entries.append(entry)

    async def close(self, client) -> None:
        for name in self._names:
            try:
                await client.unregister_system_shared_memory(name)
            except Exception:  # the server may be gone; the regions are ours to destroy either way
                pass
        for handle in self._handles:
            shm.destroy_shared_memory_region(handle)
        self._names, self._handles, self.entries = [], [], []


def _payload(array: np.ndarray) -> bytes:
    if array.dtype == np.object_:
        return serialize_byte_tensor(array).item()
    return np.ascontiguousarray(array).tobytes()
