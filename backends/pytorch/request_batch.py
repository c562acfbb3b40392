"""Requests of a dynamic batch as one forward() call: inputs concatenated along dim 0, rows split back.

Models with max_batch_size > 0 run every request of a batch in one call when the requests
carry the same inputs with the same non-batch shapes (the dynamic batcher groups them so;
ragged inputs may not be); otherwise, and for models with max_batch_size 0, each request
runs alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelgate.core.inference_types import InferRequest


@dataclass(frozen=True)
class RequestBatch:
    """Requests that run as one forward() call; `row_counts[k]` rows belong to `requests[k]`."""

    requests: list[InferRequest]
    row_counts: list[int]
    is_batched: bool  # the model has a batch dimension (max_batch_size > 0)

    @property
    def num_rows(self) -> int:
        return sum(self.row_counts)

    def input_parts(self) -> dict[str, list]:
        """Each input name -> its data in each request, in order: the parts to concatenate along dim 0 (numpy
        arrays, or torch tensors on a GPU for inputs read from CUDA shared memory)."""
        return {name: [r.inputs[name].data for r in self.requests] for name in self.requests[0].inputs}

    def split(self, array: np.ndarray) -> list[np.ndarray]:
        """`array`'s rows for each request, in order (views, no copies)."""
        if len(self.requests) == 1:
            return [array]
        bounds = np.cumsum(self.row_counts)[:-1]
        return np.split(array, bounds)


def plan_batches(requests: list[InferRequest], is_batched: bool) -> list[RequestBatch]:
    """One RequestBatch for all `requests` where they can run together, else one each."""
    if is_batched and len(requests) > 1 and _can_concatenate(requests):
        return [RequestBatch(requests, [_rows(r) for r in requests], True)]
    return [RequestBatch([r], [_rows(r) if is_batched else 1], is_batched) for r in requests]


def _rows(request: InferRequest) -> int:
    return next((int(t.data.shape[0]) for t in request.inputs.values()), 1)


def _can_concatenate(requests: list[InferRequest]) -> bool:
    def layout(request: InferRequest):
        # numpy arrays and torch tensors (CUDA shared-memory inputs) never match: their dtypes are different types
        return {name: (t.data.dtype, tuple(t.data.shape[1:])) for name, t in request.inputs.items()}

    first = layout(requests[0])
    return all(layout(r) == first for r in requests[1:])
