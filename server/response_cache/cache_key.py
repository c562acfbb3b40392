"""The key of a request in the response cache: what decides its response, hashed.

As Triton's: the model name and version and every input's name, datatype, shape and bytes (in name order, so
the order a client sends them in does not matter). The requested output names are part of it too: two
requests that ask for different outputs get different responses.
"""

from __future__ import annotations

import hashlib

import numpy as np

from modelgate.core.inference_types import InferRequest
from modelgate.core.tensors.bytes_codec import serialize_bytes_tensor


def cache_key(request: InferRequest, version: int) -> bytes | None:
    """A 32-byte digest; None when an input is not a host array (a BLS request's GPU tensor): not cached."""
    digest = hashlib.blake2b(digest_size=32)
    _add(digest, request.model_name.encode(), str(version).encode())
    for name in sorted(request.inputs):
        tensor = request.inputs[name]
        if not isinstance(tensor.data, np.ndarray):
            return None
        _add(digest, name.encode(), tensor.datatype.encode(), repr(tuple(tensor.shape)).encode(), _bytes(tensor))
    _add(digest, b"outputs", *(name.encode() for name in sorted(request.requested_output_names)))
    return digest.digest()


def _bytes(tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return serialize_bytes_tensor(tensor.data)
    return np.ascontiguousarray(tensor.data).tobytes()


def _add(digest, *parts: bytes) -> None:
    # Each part is preceded by its length, so that ("ab", "c") and ("a", "bc") differ.
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
