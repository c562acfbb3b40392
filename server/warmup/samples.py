"""A config's `model_warmup` samples made into the requests that warm a model version up at load.

As Triton builds them: a sample of `batch_size` N is N requests of one row each (for a batching model; the
request of a model that does not batch has no batch dimension), carrying the same data, and runs `count`
times (0 means once). Data is zeros (empty strings for BYTES), random values (zeros for BYTES, as Triton
falls back), or the raw row-major bytes of a file (BYTES: each element a 4-byte little-endian length and its
bytes) in the `warmup/` folder: the version folder's when it has one, else the model folder's (where Triton
looks). A file path that leads out of that folder, through '..' or a link, is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelWarmup

from modelgate.core.errors import ConfigError, InvalidArgumentError
from modelgate.core.inference_types import InferRequest, InferTensor
from modelgate.core.tensors import datatypes
from modelgate.core.tensors.bytes_codec import deserialize_bytes_tensor

WARMUP_FOLDER = "warmup"


@dataclass(frozen=True)
class WarmupSample:
    name: str
    requests: list[InferRequest]  # executed together, as one batch
    num_runs: int

    @property
    def batch_size(self) -> int:
        return len(self.requests)


def build_samples(config: ModelConfig, model_dir: Path, version: int, source: str) -> list[WarmupSample]:
    """Every sample of `config.model_warmup` (already checked by warmup_config.py), its files read."""
    folder = warmup_folder(model_dir, model_dir / str(version))
    rng = np.random.default_rng()
    return [_build(config, sample, folder, rng, source, index) for index, sample in enumerate(config.model_warmup)]


def warmup_folder(model_dir: Path, version_dir: Path) -> Path:
    """Where `input_data_file` names are looked up: `<version>/warmup/`, else `<model>/warmup/`."""
    in_version = version_dir / WARMUP_FOLDER
    return in_version if in_version.is_dir() else model_dir / WARMUP_FOLDER


def _build(config, sample: ModelWarmup, folder: Path, rng, source: str, index: int) -> WarmupSample:
    has_batch = config.max_batch_size > 0
    tensors = [
        _tensor(name, value, has_batch, folder, rng, source, f"model_warmup[{index}].inputs[{name}]")
        for name, value in sorted(sample.inputs.items())
    ]
    requests = [
        InferRequest(config.name, id=f"warmup:{sample.name}", inputs={t.name: _copy(t) for t in tensors})
        for _ in range(sample.batch_size)
    ]
    return WarmupSample(sample.name, requests, max(1, sample.count))


def _tensor(name, value: ModelWarmup.Input, has_batch: bool, folder, rng, source, where) -> InferTensor:
    datatype = datatypes.from_config_name(DataType.Name(value.data_type))
    dims = [int(d) for d in value.dims]
    choice = value.WhichOneof("input_data_type")
    if choice == "input_data_file":
        data = _from_file(folder, value.input_data_file, datatype, dims, source, f"{where}.input_data_file")
    elif choice == "random_data" and not datatype.is_bytes:
        data = _random(datatype, dims, rng)
    else:
        data = _zeros(datatype, dims)
    shape = tuple(([1] if has_batch else []) + dims)
    return InferTensor(name, datatype.wire_name, shape, data.reshape(shape))


def _zeros(datatype, dims: list[int]) -> np.ndarray:
    if datatype.is_bytes:
        return np.full(dims, b"", dtype=object)
    return np.zeros(dims, dtype=datatype.numpy_dtype)


def _random(datatype, dims: list[int], rng) -> np.ndarray:
    dtype = datatype.numpy_dtype
    if dtype == np.bool_:
        return rng.integers(0, 2, size=dims).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return np.frombuffer(rng.bytes(math.prod(dims) * dtype.itemsize), dtype=dtype).reshape(dims)
    return rng.random(size=dims).astype(dtype)  # floats (BF16 too): in [0, 1), never NaN or infinite


def _from_file(folder: Path, name: str, datatype, dims: list[int], source: str, where: str) -> np.ndarray:
    path = _inside(folder, name, source, where)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(source, where, f"cannot read '{path}': {exc.strerror or exc}") from None
    count = math.prod(dims)
    if datatype.is_bytes:
        try:
            return deserialize_bytes_tensor(content, count, f"'{path}'")
        except InvalidArgumentError as exc:
            raise ConfigError(source, where, exc.message) from None
    needed = count * datatype.itemsize
    if len(content) < needed:  # as Triton, a longer file is fine: its first bytes are the data
        raise ConfigError(source, where, f"'{path}' has {len(content)} bytes; dims {dims} need {needed}")
    return np.frombuffer(content[:needed], dtype=datatype.numpy_dtype).copy()


def _inside(folder: Path, name: str, source: str, where: str) -> Path:
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ConfigError(source, where, f"'{name}' leads out of the warmup folder {folder}")
    return path


def _copy(tensor: InferTensor) -> InferTensor:
    """A tensor of its own per request: validation reshapes inputs in place."""
    return InferTensor(tensor.name, tensor.datatype, tensor.shape, tensor.data)
