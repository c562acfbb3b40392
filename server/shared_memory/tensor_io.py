"""Inputs read from and outputs written to registered regions, for requests whose tensors name one.

A tensor in shared memory carries the parameters `shared_memory_region` (a registered name),
`shared_memory_byte_size` and, optionally, `shared_memory_offset` (default 0). The frontends decode such an input
with `data=None`; `read_inputs` fills it in, and `write_outputs` moves each such requested output's data into its
region, leaving the response's tensor without data (the encoders then send none, as Triton does). Offsets and sizes
are checked against the region before any byte moves. Host copies of more than `THREAD_COPY_BYTES` run off the event
loop; reading a CUDA region stays on it whatever its size, since it only enqueues a device-to-device copy.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, NamedTuple

import numpy as np

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.inference_types import InferRequest, InferResponse, InferTensor
from modelgate.core.tensors import datatypes
from modelgate.core.tensors.bytes_codec import deserialize_bytes_tensor, serialize_bytes_tensor
from modelgate.core.tensors.device_tensors import is_device_tensor
from modelgate.server.shared_memory.cuda_region import CudaRegion
from modelgate.server.shared_memory.registry import Region, SharedMemoryRegistry

REGION = "shared_memory_region"
BYTE_SIZE = "shared_memory_byte_size"
OFFSET = "shared_memory_offset"
THREAD_COPY_BYTES = 1 << 20


class RegionSpan(NamedTuple):
    region: Region
    offset: int
    byte_size: int


def names_region(parameters: dict[str, Any]) -> bool:
    """Whether a tensor's parameters put it in shared memory (its data is not in the message)."""
    return REGION in parameters


def uses_shared_memory(request: InferRequest) -> bool:
    return any(REGION in t.parameters for t in request.inputs.values()) or any(
        REGION in o.parameters for o in request.outputs
    )


async def read_inputs(request: InferRequest, registry: SharedMemoryRegistry) -> None:
    """Fill in the data of every input that names a region (checked against its shape and datatype)."""
    for tensor in request.inputs.values():
        if REGION in tensor.parameters:
            where = f"input '{tensor.name}'"
            span = region_span(registry, tensor.parameters, where)
            if isinstance(span.region, CudaRegion):  # a thread hop would cost more than the enqueued copy
                tensor.data = _read_tensor(span, tensor, where)
            else:
                tensor.data = await _off_loop_if_large(span.byte_size, _read_tensor, span, tensor, where)


async def write_outputs(request: InferRequest, response: InferResponse, registry: SharedMemoryRegistry) -> None:
    """Write each output requested in a region there; the response keeps its name, datatype and shape, no data."""
    spans = {
        o.name: region_span(registry, o.parameters, f"output '{o.name}'")
        for o in request.outputs
        if REGION in o.parameters
    }
    for output in response.outputs:
        span = spans.get(output.name)
        if span is not None:
            where = f"output '{output.name}'"
            await _off_loop_if_large(span.byte_size, _write_tensor, span, output, where)


def region_span(registry: SharedMemoryRegistry, parameters: dict[str, Any], where: str) -> RegionSpan:
    if BYTE_SIZE not in parameters:
        raise InvalidArgumentError(f"{where}: '{REGION}' needs '{BYTE_SIZE}' too")
    name = parameters[REGION]
    if not isinstance(name, str):
        raise InvalidArgumentError(f"{where}: '{REGION}' must be a string")
    byte_size = _non_negative(parameters[BYTE_SIZE], BYTE_SIZE, where)
    offset = _non_negative(parameters.get(OFFSET, 0), OFFSET, where)
    region = registry.region(name, where)
    if offset + byte_size > region.byte_size:
        raise InvalidArgumentError(
            f"{where}: {OFFSET} {offset} + {BYTE_SIZE} {byte_size} is past the end of shared memory region "
            f"'{name}' ({region.byte_size} bytes)"
        )
    return RegionSpan(region, offset, byte_size)


def _non_negative(value: Any, key: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(f"{where}: '{key}' must be a non-negative integer, got {value!r}")
    return value


async def _off_loop_if_large(byte_size: int, copy, *args):
    if byte_size > THREAD_COPY_BYTES:
        return await asyncio.to_thread(copy, *args)
    return copy(*args)


def _read_tensor(span: RegionSpan, tensor: InferTensor, where: str):
    datatype = datatypes.from_wire_name(tensor.datatype, f"{where} datatype")
    count = math.prod(tensor.shape)
    if not datatype.is_bytes and span.byte_size != count * datatype.itemsize:
        raise InvalidArgumentError(
            f"{where}: {BYTE_SIZE} is {span.byte_size} bytes but shape {list(tensor.shape)} of {datatype.wire_name} "
            f"needs {count * datatype.itemsize}"
        )
    raw = span.region.read(span.offset, span.byte_size, where)
    if is_device_tensor(raw):
        return _device_tensor(raw, datatype, tensor.shape, count, where)
    if datatype.is_bytes:
        return deserialize_bytes_tensor(memoryview(raw), count, where).reshape(tensor.shape)
    array = raw.view(datatype.numpy_dtype).reshape(tensor.shape)
    array.flags.writeable = False  # as inputs over the wire: python models get writable copies
    return array


def _device_tensor(raw, datatype: datatypes.DataType, shape: tuple[int, ...], count: int, where: str):
    """A CUDA region's bytes as a typed tensor on its device; BYTES come to the host (they are parsed there)."""
    if datatype.is_bytes:
        host = raw.cpu().numpy()
        return deserialize_bytes_tensor(memoryview(host), count, where).reshape(shape)
    import torch

    # numpy has no bfloat16: ml_dtypes' type is not one torch knows
    dtype = (
        torch.bfloat16 if datatype.wire_name == "BF16" else torch.from_numpy(np.empty(0, datatype.numpy_dtype)).dtype
    )
    return raw.clone().view(dtype).reshape(shape)  # clone: a view to a wider type needs an aligned start


def _write_tensor(span: RegionSpan, output: InferTensor, where: str) -> None:
    payload = _output_bytes(output)
    size = payload.nbytes
    if size > span.byte_size:
        raise InvalidArgumentError(
            f"{where}: shared memory size specified with the request ({span.byte_size} bytes) should be at least "
            f"{size} bytes to hold the results"
        )
    span.region.write(span.offset, payload, where)
    output.data = None


def _output_bytes(output: InferTensor):
    """The output's bytes: a memoryview of host memory, or a uint8 CUDA tensor (both have `nbytes`)."""
    data = output.data
    if output.datatype == "BYTES":
        return memoryview(serialize_bytes_tensor(np.asarray(data)))
    if is_device_tensor(data):
        import torch

        return data.contiguous().reshape(-1).view(torch.uint8)
    return memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
