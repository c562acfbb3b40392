"""Random input tensors for any KServe v2 model, shaped from its metadata and config.

Rules: a batched model (max_batch_size > 0) gets `batch_size` as its first dimension; every
other -1 dimension gets `shape_size`; `overrides` give an input's whole shape without the batch
dimension (as perf_analyzer's --shape). Values: integers in [0, 100), floats in [0, 1), booleans,
and 8-character ASCII strings for BYTES, so that typical example models neither overflow nor fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_INTEGER = {
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}
_FLOAT = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


class TensorInputError(ValueError):
    """Inputs that bench tensor cannot make: unknown names, unsupported datatypes, a decoupled model."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]


def input_specs(
    metadata: dict, max_batch_size: int, batch_size: int, shape_size: int, overrides: dict[str, list[int]]
) -> list[InputSpec]:
    """One spec per model input; `metadata` as v2 metadata JSON (gRPC's string dims accepted)."""
    unknown = set(overrides) - {tensor["name"] for tensor in metadata["inputs"]}
    if unknown:
        raise TensorInputError(f"--shape names unknown inputs {sorted(unknown)}")
    specs = []
    for tensor in metadata["inputs"]:
        dims = [int(d) for d in tensor["shape"]]
        if max_batch_size > 0:
            dims = dims[1:]  # v2 metadata of a batched model leads with the batch dimension (-1)
        dims = list(overrides.get(tensor["name"], [shape_size if d < 0 else d for d in dims]))
        shape = ([batch_size] if max_batch_size > 0 else []) + dims
        specs.append(InputSpec(tensor["name"], tensor["datatype"], tuple(shape)))
    return specs


def random_array(spec: InputSpec, rng: np.random.Generator) -> np.ndarray:
    if spec.datatype in _FLOAT:
        return rng.random(spec.shape).astype(_FLOAT[spec.datatype])
    if spec.datatype in _INTEGER:
        return rng.integers(0, 100, spec.shape).astype(_INTEGER[spec.datatype])
    if spec.datatype == "BOOL":
        return rng.integers(0, 2, spec.shape).astype(bool)
    if spec.datatype == "BYTES":
        letters = rng.integers(ord("a"), ord("z") + 1, (*spec.shape, 8), dtype=np.uint8)
        flat = [row.tobytes() for row in letters.reshape(-1, 8)]
        return np.array(flat, dtype=object).reshape(spec.shape)
    raise TensorInputError(f"input '{spec.name}': datatype {spec.datatype} is not supported by bench tensor")
