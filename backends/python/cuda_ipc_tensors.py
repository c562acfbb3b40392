"""GPU tensors between the server and a stub by CUDA IPC: a handle travels in the frame, the bytes stay on the GPU.

The sender shares the tensor's storage with torch's IPC API (`UntypedStorage._share_cuda_`, the call that
torch.multiprocessing makes, minus its pickling): the cudaMalloc block's IPC handle, where the storage lies in
it, a slot of torch's shared reference counter and an interprocess event recorded on the sender's current
stream. `CudaIpcTensor` carries these fields plus what makes a tensor of them (dtype, shape, offset); the
receiver opens the block (`UntypedStorage._new_shared_cuda`), which also makes its current stream wait for the
sender's event: the receiver never reads bytes the sender's kernels have not written yet.

Lifetime (chosen: the receiver copies on receipt, on the GPU). The receiver copies the tensor into an
allocation of its own (device to device, on its current stream, after the event wait) as soon as it decodes
the frame, then drops the opened storage: torch's deleter synchronizes that stream (the copy is done) and
decrements the reference counter, and the sender's block is free again. Until then torch keeps the sender's
block alive even if the sender dropped the tensor (its storage waits in torch's "limbo" until the counter is
zero), so the sender keeps no references and no release message is needed. Why a copy rather than keeping
the other process's memory mapped:
- a stub may crash or be killed at any time; a server that kept a stub's memory mapped, or a stub holding the
  server's, would tie their memory together: with a copy, each side owns only its own allocations, and what
  a dead process held is freed with it (at worst the one tensor in flight stays in the sender's limbo);
- torch refuses to share again storage it received by IPC ("Consider cloning before sending"), and a BLS
  tensor does go on: caller stub -> server -> called model's stub. A copy is an ordinary allocation that can;
- a model may reuse its output buffer in the next execute: the server's copy is taken before it answers
  ExecuteDone's batch, so before the stub gets its next Execute.
The copy costs one device-to-device pass over the bytes (tens of microseconds for 64 MiB on an H100), no host
round trip. A model that writes a tensor after sending it (decoupled responses sent while it keeps working on
the buffer) races with the copy, as with torch.multiprocessing: send a tensor you no longer change.

Only contiguous tensors travel (others are made contiguous first, on the sender's GPU). A zero-size tensor has
no memory to share: an empty handle, and the receiver makes an empty tensor on the device.
"""

from __future__ import annotations

import math

import msgspec

from modelgate.core.errors import UnsupportedError


class CudaIpcTensor(msgspec.Struct, array_like=True):
    """A contiguous CUDA tensor by IPC: torch's `_share_cuda_` fields, then dtype, shape and element offset."""

    device: int  # the CUDA device index (both processes see the same devices: the stub inherits the env)
    handle: bytes  # cudaIpcMemHandle of the cudaMalloc block holding the storage; b"" for a zero-size tensor
    storage_size_bytes: int
    storage_offset_bytes: int  # where the storage starts in that block
    ref_counter_handle: bytes  # torch's shared-memory counter file, and the slot in it, for this share
    ref_counter_offset: int
    event_handle: bytes  # cudaIpcEventHandle recorded on the sender's current stream
    event_sync_required: bool  # False: torch ran out of IPC events and synchronized the stream instead
    dtype: str  # torch dtype name without "torch.": float32, bfloat16, ...
    shape: tuple[int, ...]
    offset: int  # the tensor's first element in the storage, in elements


def share(tensor) -> CudaIpcTensor:  # tensor: torch CUDA tensor, any shape
    """The IPC fields of a CUDA tensor. torch keeps its memory until the receiver has closed it (see above)."""
    tensor = tensor.detach().contiguous()
    dtype = str(tensor.dtype).removeprefix("torch.")
    shape = tuple(int(d) for d in tensor.shape)
    if tensor.numel() == 0:
        return CudaIpcTensor(tensor.device.index or 0, b"", 0, 0, b"", 0, b"", False, dtype, shape, 0)
    fields = tensor.untyped_storage()._share_cuda_()
    device, handle, size, storage_offset, counter, counter_offset, event, event_required = fields
    return CudaIpcTensor(
        int(device),
        bytes(handle),
        int(size),
        int(storage_offset),
        bytes(counter),
        int(counter_offset),
        bytes(event),
        bool(event_required),
        dtype,
        shape,
        int(tensor.storage_offset()),
    )


def open_copy(wire: CudaIpcTensor, where: str):
    """The tensor as a new allocation of this process on the same device, copied there on the GPU.

    Raises UnsupportedError when this process cannot use CUDA (no torch, a CPU-only torch, no device).
    """
    torch = _cuda_torch(wire, where)
    dtype = _torch_dtype(torch, wire.dtype, where)
    with torch.cuda.device(wire.device):
        if not wire.handle:
            return torch.empty(wire.shape, dtype=dtype, device=f"cuda:{wire.device}")
        opened = _opened(torch, wire, dtype)
        copy = opened.clone()  # on the current stream, which _new_shared_cuda made wait for the sender's event
        # The last reference to the opened storage goes here: torch's deleter synchronizes this stream (the copy
        # is complete) and releases the sender's block.
        del opened
    return copy


def _opened(torch, wire: CudaIpcTensor, dtype):  # -> the sender's tensor, mapped into this process
    storage = torch.UntypedStorage._new_shared_cuda(
        wire.device,
        wire.handle,
        wire.storage_size_bytes,
        wire.storage_offset_bytes,
        wire.ref_counter_handle,
        wire.ref_counter_offset,
        wire.event_handle,
        wire.event_sync_required,
    )
    itemsize = torch.empty((), dtype=dtype).element_size()
    if (wire.offset + math.prod(wire.shape)) * itemsize > wire.storage_size_bytes:
        raise ValueError(f"CUDA IPC tensor of shape {list(wire.shape)} does not fit its storage")
    empty = torch.empty((0,), dtype=dtype, device=f"cuda:{wire.device}")
    return empty.set_(storage, wire.offset, wire.shape, _contiguous_strides(wire.shape))


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _cuda_torch(wire: CudaIpcTensor, where: str):
    """torch, once it is known to reach the tensor's device."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        raise UnsupportedError(
            f"{where} is a GPU tensor (cuda:{wire.device}, sent by CUDA IPC) but this process cannot use CUDA "
            f"({'torch is not installed' if torch is None else 'torch finds no CUDA device'}); "
            "move it to the CPU before sending it (tensor.cpu())"
        )
    if wire.device >= torch.cuda.device_count():
        raise UnsupportedError(
            f"{where} is on cuda:{wire.device}, which this process does not see "
            f"({torch.cuda.device_count()} devices): sender and receiver must see the same devices"
        )
    return torch


def _torch_dtype(torch, name: str, where: str):
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{where}: '{name}' is not a torch dtype")
    return dtype
