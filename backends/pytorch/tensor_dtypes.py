"""Triton datatypes <-> torch dtypes, numpy arrays <-> torch tensors, and when a cast loses nothing.

numpy has no bfloat16 of its own: the server carries BF16 as ml_dtypes' `bfloat16`, which torch
cannot read directly, so BF16 crosses as its 16-bit pattern and is re-viewed on the other side.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import torch

_TORCH_BY_CONFIG_NAME: dict[str, torch.dtype] = {
    "TYPE_BOOL": torch.bool,
    "TYPE_UINT8": torch.uint8,
    "TYPE_UINT16": torch.uint16,
    "TYPE_UINT32": torch.uint32,
    "TYPE_UINT64": torch.uint64,
    "TYPE_INT8": torch.int8,
    "TYPE_INT16": torch.int16,
    "TYPE_INT32": torch.int32,
    "TYPE_INT64": torch.int64,
    "TYPE_FP16": torch.float16,
    "TYPE_FP32": torch.float32,
    "TYPE_FP64": torch.float64,
    "TYPE_BF16": torch.bfloat16,
}
_CONFIG_NAME_BY_TORCH = {dtype: name for name, dtype in _TORCH_BY_CONFIG_NAME.items()}
_BF16 = np.dtype(ml_dtypes.bfloat16)

# Significand bits (with the implicit one) of each float: the widest integer it holds exactly.
_SIGNIFICAND_BITS = {torch.float16: 11, torch.bfloat16: 8, torch.float32: 24, torch.float64: 53}


def torch_dtype(config_name: str) -> torch.dtype | None:
    """The torch dtype of a config type name ("TYPE_FP32"); None for TYPE_STRING and unknown names."""
    return _TORCH_BY_CONFIG_NAME.get(config_name)


def config_name(dtype: torch.dtype) -> str | None:
    """The config type name of a torch dtype; None when Triton has no such type (complex, fp8...)."""
    return _CONFIG_NAME_BY_TORCH.get(dtype)


def to_torch(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing `array`'s memory where it can (read-only arrays are copied)."""
    if not array.flags.writeable:
        array = array.copy()  # torch tensors are always writable: never alias a read-only buffer
    if array.dtype == _BF16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """The numpy form of a CPU tensor; bfloat16 becomes ml_dtypes' bfloat16."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(_BF16)
    return tensor.numpy()


def is_lossless(source: torch.dtype, target: torch.dtype) -> bool:
    """Whether every value of `source` is exactly a value of `target` (so a cast changes nothing)."""
    if source == target or source == torch.bool:
        return True
    if target == torch.bool or source.is_complex or target.is_complex:
        return False
    if source.is_floating_point:
        return target.is_floating_point and _float_fits(source, target)
    if target.is_floating_point:
        return _integer_bits(source) <= _SIGNIFICAND_BITS.get(target, 0)
    return _integer_fits(source, target)


def _float_fits(source: torch.dtype, target: torch.dtype) -> bool:
    small, large = torch.finfo(source), torch.finfo(target)
    return large.max >= small.max and large.eps <= small.eps and large.smallest_normal <= small.smallest_normal


def _integer_bits(dtype: torch.dtype) -> int:
    """Bits of magnitude: int16 holds 15, uint16 holds 16."""
    info = torch.iinfo(dtype)
    return info.bits - 1 if info.min < 0 else info.bits


def _integer_fits(source: torch.dtype, target: torch.dtype) -> bool:
    small, large = torch.iinfo(source), torch.iinfo(target)
    return large.min <= small.min and large.max >= small.max
