"""A dynamic batch as one ONNX run: inputs joined along dim 0, outputs split back per request."""

from __future__ import annotations

import numpy as np

from modelgate.core.errors import ModelExecutionError

Feeds = dict[str, np.ndarray]  # input name -> array, batch dimension first when the model batches


def can_join(feeds: list[Feeds]) -> bool:
    """Whether the requests have the same inputs with the same shapes after the batch dimension."""
    first = feeds[0]
    return all(
        f.keys() == first.keys() and all(f[n].shape[1:] == first[n].shape[1:] and f[n].ndim >= 1 for n in first)
        for f in feeds
    )


def join_feeds(feeds: list[Feeds]) -> tuple[Feeds, list[int]]:
    """(the concatenated inputs, each request's batch size); `can_join(feeds)` must hold."""
    assert feeds and can_join(feeds), "join_feeds needs requests whose non-batch shapes agree"
    batch_sizes = [int(next(iter(f.values())).shape[0]) if f else 1 for f in feeds]
    if len(feeds) == 1:
        return feeds[0], batch_sizes
    joined = {name: np.concatenate([f[name] for f in feeds], axis=0) for name in feeds[0]}
    return joined, batch_sizes


def split_outputs(outputs: dict[str, np.ndarray], batch_sizes: list[int]) -> list[dict[str, np.ndarray]]:
    """Each request's slice of every output; the outputs' first dimension must be the batch total."""
    if len(batch_sizes) == 1:
        return [outputs]
    total = sum(batch_sizes)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ModelExecutionError(
                f"output '{name}' has shape {list(array.shape)} for a batch of {total}; "
                "a batching model must return the batch as its first dimension"
            )
    offsets = np.cumsum(batch_sizes)[:-1]
    per_request: list[dict[str, np.ndarray]] = [{} for _ in batch_sizes]
    for name, array in outputs.items():
        for index, part in enumerate(np.split(array, offsets, axis=0)):
            per_request[index][name] = part
    return per_request
