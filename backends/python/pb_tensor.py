"""`pb_utils.Tensor`: a named tensor holding a numpy array or, through DLPack, a torch tensor."""

from __future__ import annotations

import numpy as np

from modelgate.backends.python.pb_types import _WIRE_TO_CODE, TritonModelException, triton_to_numpy_type
from modelgate.core.tensors import datatypes


class Tensor:
    """A named tensor holding a numpy array (CPU) or, through DLPack, a torch tensor."""

    def __init__(self, name: str, numpy_array, triton_dtype: int | None = None):
        if not isinstance(numpy_array, np.ndarray):
            numpy_array = np.asarray(numpy_array)
        if numpy_array.dtype.kind in ("U", "S"):
            numpy_array = numpy_array.astype(object)
        elif numpy_array.dtype.kind == "V" and triton_dtype is None and not _is_bf16(numpy_array.dtype):
            raise TritonModelException(
                "Tensor dtype used for numpy_array is not supported by Python backend. Please use np.object_ instead."
            )
        if triton_dtype is not None:
            wanted = triton_to_numpy_type(triton_dtype)
            if wanted is not None and numpy_array.dtype != np.dtype(wanted):
                numpy_array = numpy_array.view(wanted)
        self._name = name
        self._data = numpy_array

    @classmethod
    def _wrap(cls, name: str, data) -> Tensor:
        tensor = cls.__new__(cls)
        tensor._name = name
        tensor._data = data
        return tensor

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        if isinstance(self._data, np.ndarray):
            return self._data
        if not self.is_cpu():
            raise TritonModelException("Tensor is stored in GPU and cannot be converted to NumPy.")
        return _torch_to_numpy(self._data)

    def triton_dtype(self) -> int:
        return _WIRE_TO_CODE[self._wire_datatype()]

    def shape(self) -> list[int]:
        return list(self._data.shape)

    def is_cpu(self) -> bool:
        device = getattr(self._data, "device", None)
        return device is None or str(device) == "cpu"

    def to_dlpack(self):
        """A DLPack capsule sharing this tensor's memory."""
        if self._wire_datatype() == "BYTES":
            raise TritonModelException("DLPack does not support BYTES (string) tensors.")
        return _as_torch(self._data).__dlpack__()

    def __dlpack__(self, stream=None):
        return (
            _as_torch(self._data).__dlpack__(stream=stream)
            if stream is not None
            else _as_torch(self._data).__dlpack__()
        )

    def __dlpack_device__(self):
        return _as_torch(self._data).__dlpack_device__()

    @staticmethod
    def from_dlpack(name: str, dlpack_tensor) -> Tensor:
        """A Tensor sharing memory with a DLPack capsule or any object with `__dlpack__`."""
        import torch.utils.dlpack

        return Tensor._wrap(name, torch.utils.dlpack.from_dlpack(dlpack_tensor))

    def _wire_datatype(self) -> str:
        if isinstance(self._data, np.ndarray):
            return datatypes.from_numpy_dtype(self._data.dtype).wire_name
        return _TORCH_WIRE_NAMES[str(self._data.dtype)]

    def _as_numpy_for_server(self) -> np.ndarray:
        """Not in Triton's API: the data as a host numpy array for the response."""
        if isinstance(self._data, np.ndarray):
            return self._data
        return _torch_to_numpy(self._data.detach().cpu())


_TORCH_WIRE_NAMES = {
    "torch.bool": "BOOL",
    "torch.uint8": "UINT8",
    "torch.uint16": "UINT16",
    "torch.uint32": "UINT32",
    "torch.uint64": "UINT64",
    "torch.int8": "INT8",
    "torch.int16": "INT16",
    "torch.int32": "INT32",
    "torch.int64": "INT64",
    "torch.float16": "FP16",
    "torch.float32": "FP32",
    "torch.float64": "FP64",
    "torch.bfloat16": "BF16",
}


def _is_bf16(dtype: np.dtype) -> bool:
    return dtype == datatypes.BY_WIRE_NAME["BF16"].numpy_dtype


def _as_torch(data):
    import torch

    if not isinstance(data, np.ndarray):
        return data
    if _is_bf16(data.dtype):
        return torch.from_numpy(np.ascontiguousarray(data).view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(data))


def _torch_to_numpy(tensor) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:
        return tensor.contiguous().view(torch.uint16).numpy().view(datatypes.BY_WIRE_NAME["BF16"].numpy_dtype)
    return tensor.numpy()
