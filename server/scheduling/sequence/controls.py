"""The control tensors the batcher adds to each request of a sequence model (START, END, READY, CORRID).

Each is one value per batch row: shape [1, 1] for a model with a batch dimension (every sequence request is a
batch of one), [1] without. A padding request (a free slot of a direct batch) has READY false, START and END
false and CORRID 0 (or "").
"""

from __future__ import annotations

import numpy as np

from modelgate.core.inference_types import InferTensor
from modelgate.server.scheduling.sequence.correlation import SequenceFlags
from modelgate.server.scheduling.sequence.sequence_config import ControlSpec


def control_tensors(
    specs: tuple[ControlSpec, ...], flags: SequenceFlags | None, has_batch_dim: bool
) -> dict[str, InferTensor]:
    """The control inputs of a request with `flags` (None: a padding request), by input name."""
    shape = (1, 1) if has_batch_dim else (1,)
    return {spec.name: _tensor(spec, _value(spec, flags), shape) for spec in specs}


def _value(spec: ControlSpec, flags: SequenceFlags | None):
    if spec.kind == "CORRID":
        if flags is None:
            return b"" if spec.datatype.is_bytes else 0
        sequence_id = flags.sequence_id
        return sequence_id.encode() if isinstance(sequence_id, str) else sequence_id
    is_true = flags is not None and {"START": flags.is_start, "END": flags.is_end, "READY": True}[spec.kind]
    return spec.values[1] if is_true else spec.values[0]


def _tensor(spec: ControlSpec, value, shape: tuple[int, ...]) -> InferTensor:
    data = np.full(shape, value, dtype=spec.datatype.numpy_dtype)
    return InferTensor(spec.name, spec.datatype.wire_name, shape, data)
