"""The local response cache: responses by request key, least recently used first out, bounded in bytes.

One cache for the server, shared by every model that enables it (as Triton's). An entry costs its outputs'
bytes (BYTES elements: their lengths) plus its key; an entry larger than the whole cache is not stored.
Used on the event loop only, so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from modelgate.core.inference_types import InferTensor


@dataclass(frozen=True)
class CachedResponse:
    outputs: list[InferTensor]
    parameters: dict
    num_bytes: int


class ResponseCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.num_bytes = 0
        self.num_evictions = 0
        self._entries: OrderedDict[bytes, CachedResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: bytes) -> CachedResponse | None:
        """The entry for `key`, now the most recently used; None on a miss."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def insert(self, key: bytes, outputs: list[InferTensor], parameters: dict) -> bool:
        """Store a response, evicting the least recently used entries to make room; False if it cannot fit."""
        size = len(key) + sum(_tensor_bytes(tensor) for tensor in outputs)
        if size > self.max_bytes:
            return False
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.num_bytes -= previous.num_bytes
        while self.num_bytes + size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.num_bytes -= evicted.num_bytes
            self.num_evictions += 1
        # Copies: an output may be a view of memory its backend reuses (a python model's shared memory).
        copies = [
            InferTensor(t.name, t.datatype, t.shape, np.array(t.data, copy=True), dict(t.parameters)) for t in outputs
        ]
        self._entries[key] = CachedResponse(copies, dict(parameters), size)
        self.num_bytes += size
        return True


def _tensor_bytes(tensor: InferTensor) -> int:
    data = tensor.data
    if data.dtype == np.dtype(object):
        return sum(len(element) for element in data.reshape(-1).tolist())
    return int(data.nbytes)
