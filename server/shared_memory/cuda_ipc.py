"""CUDA IPC through the CUDA runtime and driver libraries that torch has loaded (ctypes; no build step).

`open_ipc_memory` opens a client's `cudaIpcMemHandle_t` on a device and returns a torch uint8 tensor over the
whole allocation it names; the handle is closed when the last tensor over it is freed. The allocation's real size
comes from the driver (cuMemGetAddressRange), so a region can never be registered larger than the memory behind it:
a read past an allocation on the GPU would poison the device's context for every model on it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import weakref
from functools import cache

from modelgate.core.errors import InvalidArgumentError, UnavailableError

IPC_HANDLE_BYTES = 64
_LAZY_ENABLE_PEER_ACCESS = 1


class _IpcMemHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * IPC_HANDLE_BYTES)]


class _DeviceBuffer:
    """What torch.as_tensor takes a device pointer from; its finalizer closes the IPC mapping."""

    def __init__(self, pointer: int, byte_size: int, runtime: ctypes.CDLL):
        self.__cuda_array_interface__ = {
            "shape": (byte_size,),
            "typestr": "|u1",
            "data": (pointer, False),
            "version": 3,
        }
        weakref.finalize(self, runtime.cudaIpcCloseMemHandle, ctypes.c_void_p(pointer))


def open_ipc_memory(raw_handle: bytes, device_id: int):
    """A torch uint8 tensor on `cuda:device_id` over the allocation that `raw_handle` names (zero copy)."""
    import torch

    if len(raw_handle) != IPC_HANDLE_BYTES:
        raise InvalidArgumentError(f"raw_handle has {len(raw_handle)} bytes; a CUDA IPC handle has {IPC_HANDLE_BYTES}")
    if not torch.cuda.is_available() or not 0 <= device_id < torch.cuda.device_count():
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise InvalidArgumentError(f"device_id {device_id} is not a GPU of this server ({count} GPUs)")
    torch.cuda.init()
    runtime, driver = _runtime(), _driver()
    _check(runtime.cudaSetDevice(device_id), "cudaSetDevice")
    pointer = ctypes.c_void_p()
    handle = _IpcMemHandle.from_buffer_copy(raw_handle)
    _check(
        runtime.cudaIpcOpenMemHandle(ctypes.byref(pointer), handle, _LAZY_ENABLE_PEER_ACCESS), "cudaIpcOpenMemHandle"
    )
    base, size = ctypes.c_uint64(), ctypes.c_size_t()
    if driver.cuMemGetAddressRange_v2(ctypes.byref(base), ctypes.byref(size), ctypes.c_uint64(pointer.value)) != 0:
        runtime.cudaIpcCloseMemHandle(pointer)
        raise InvalidArgumentError("the CUDA IPC handle names no device allocation the driver knows")
    byte_size = size.value - (pointer.value - base.value)
    buffer = _DeviceBuffer(pointer.value, byte_size, runtime)
    return torch.as_tensor(buffer, device=f"cuda:{device_id}")


def _check(status: int, call: str) -> None:
    if status != 0:
        raise InvalidArgumentError(
            f"{call} failed with CUDA error {status}: the handle may be stale or from another machine"
        )


@cache
def _runtime() -> ctypes.CDLL:
    runtime = _loaded_library("libcudart.so") or _library("cudart")
    runtime.cudaIpcOpenMemHandle.argtypes = [ctypes.POINTER(ctypes.c_void_p), _IpcMemHandle, ctypes.c_uint]
    runtime.cudaIpcCloseMemHandle.argtypes = [ctypes.c_void_p]
    runtime.cudaSetDevice.argtypes = [ctypes.c_int]
    return runtime


@cache
def _driver() -> ctypes.CDLL:
    driver = _loaded_library("libcuda.so") or _library("cuda")
    driver.cuMemGetAddressRange_v2.argtypes = [
        ctypes.POINTER(ctypes.c_uint64),
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.c_uint64,
    ]
    return driver


def _loaded_library(prefix: str) -> ctypes.CDLL | None:
    """The copy this process already has (torch's), so that both share one runtime state."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.rsplit(" ", 1)[-1].strip()
            if path.rsplit("/", 1)[-1].startswith(prefix):
                return ctypes.CDLL(path)
    return None


def _library(name: str) -> ctypes.CDLL:
    found = ctypes.util.find_library(name)
    if found is None:
        raise UnavailableError(f"CUDA shared memory needs lib{name}, which this server cannot find")
    return ctypes.CDLL(found)
