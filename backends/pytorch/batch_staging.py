"""Reused host buffers for an instance's inputs: each batch's inputs are written in place, not allocated anew.

Building a batch allocated a new array per input: the concatenation of several requests' rows, or the copy of
a lone request's read-only input (torch never aliases a read-only buffer). For images that is megabytes per
batch (16 FP32 3x224x224 images: 9.6 MB), and a block that size is mapped fresh by glibc, faulted in page by
page on first write, and unmapped when freed (server/large_allocations.py). An instance runs one batch at a
time, so each input keeps one buffer that grows to the largest batch seen. On a GPU instance the buffer is
pinned, which makes the copy to the device asynchronous on the instance's stream.

Contract: a staged tensor is valid until the instance's next `stage` of the same input. The caller must be
done with it by then: its copy to the device synchronized, and no output still sharing its memory
(`unshare_outputs`).
"""

from __future__ import annotations

import numpy as np
import torch

from modelgate.backends.pytorch.tensor_dtypes import to_torch


class BatchStaging:
    """One instance's staging buffers, by input name."""

    def __init__(self, pinned: bool):
        self._pinned = pinned
        self._buffers: dict[str, torch.Tensor] = {}
        self._staged: list[torch.Tensor] = []  # the buffers written since `release`

    def stage(self, name: str, parts: list[np.ndarray]) -> torch.Tensor:
        """`parts` concatenated along dim 0 into this input's buffer; a tensor over its first rows."""
        first = parts[0]
        rows = sum(int(part.shape[0]) for part in parts)
        dtype = to_torch(first[:0]).dtype
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.shape[1:] != first.shape[1:] or len(buffer) < rows:
            # Room for twice the rows: a batch a little larger than the last does not reallocate again.
            capacity = max(rows, 2 * len(buffer) if buffer is not None and buffer.dtype == dtype else rows)
            buffer = torch.empty((capacity, *first.shape[1:]), dtype=dtype, pin_memory=self._pinned)
            self._buffers[name] = buffer
        staged = buffer[:rows]
        np.concatenate(parts, out=_numpy_view(staged, first.dtype))
        self._staged.append(staged)
        return staged

    def unshare_outputs(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`outputs` with a copy of each one that shares memory with a staged input (a module may return its
        input, or a view of it): the next batch overwrites the buffer while this one's responses are read."""
        staged = {tensor.untyped_storage().data_ptr() for tensor in self._staged}
        self._staged.clear()
        return {
            name: tensor.clone()
            if tensor.device.type == "cpu" and tensor.untyped_storage().data_ptr() in staged
            else tensor
            for name, tensor in outputs.items()
        }

    @property
    def buffer_bytes(self) -> int:
        """Host memory the buffers hold."""
        return sum(buffer.numel() * buffer.element_size() for buffer in self._buffers.values())


def _numpy_view(tensor: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """A numpy array over `tensor`'s memory with numpy's `dtype` (bfloat16 has no torch->numpy conversion)."""
    return tensor.view(torch.uint8).numpy().view(dtype).reshape(tensor.shape)
