"""Padding requests: the free slots of a direct batch, below the highest slot that runs.

A direct batch puts each sequence at its slot index, as Triton's, so a model may keep per-slot state by batch
position; a free slot in between gets a request shaped like a real one of the batch, zero-filled, with READY
false (START, END false, CORRID 0). Its response is dropped.
"""

from __future__ import annotations

import numpy as np

from modelgate.core.inference_types import InferRequest, InferTensor, RequestedOutput
from modelgate.server.scheduling.sequence.controls import control_tensors
from modelgate.server.scheduling.sequence.implicit_state import initial_states
from modelgate.server.scheduling.sequence.sequence_config import SequenceConfig


def padding_request(template: InferRequest, config: SequenceConfig) -> InferRequest:
    """A READY=false request with `template`'s inputs (controls and states included) and outputs."""
    inputs = {name: _zeros_like(tensor) for name, tensor in template.inputs.items()}
    inputs.update(control_tensors(config.controls, None, config.has_batch_dim))
    inputs.update(initial_states(config.states, config.has_batch_dim))
    outputs = [RequestedOutput(output.name) for output in template.outputs]
    return InferRequest(template.model_name, template.model_version, inputs=inputs, outputs=outputs)


def _zeros_like(tensor: InferTensor) -> InferTensor:
    if tensor.datatype == "BYTES":
        data = np.full(tensor.shape, b"", dtype=object)
    else:
        data = np.zeros(tensor.shape, dtype=np.asarray(tensor.data).dtype)
    return InferTensor(tensor.name, tensor.datatype, tensor.shape, data)
