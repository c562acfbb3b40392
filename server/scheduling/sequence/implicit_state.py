"""Implicit state: the state output of one request of a sequence becomes the state input of the next.

The batcher keeps each sequence's state tensors (by state input name). A sequence's first request (START) gets
the initial state; each later request the state its predecessor returned. The state output is asked of the
model whatever the client asked for, and is answered to the client only when it asked for it (by name, or by
asking for all outputs when the config lists the state output among its outputs, Triton's way to debug state).
"""

from __future__ import annotations

from modelgate.core.errors import ModelExecutionError
from modelgate.core.inference_types import InferRequest, InferResponse, InferTensor, RequestedOutput
from modelgate.server.scheduling.sequence.sequence_config import StateSpec

StateTensors = dict[str, InferTensor]  # by state input name


def initial_states(specs: tuple[StateSpec, ...], has_batch_dim: bool) -> StateTensors:
    """Fresh initial state tensors (copies: a model may write into its inputs)."""
    states = {}
    for spec in specs:
        data = spec.initial[None, ...] if has_batch_dim else spec.initial
        data = data.copy()
        states[spec.input_name] = InferTensor(spec.input_name, spec.datatype.wire_name, tuple(data.shape), data)
    return states


def ask_for_state_outputs(request: InferRequest, specs: tuple[StateSpec, ...], declared: list[str]) -> set[str]:
    """Make `request` ask for every state output; returns those the client did not ask for (to drop later)."""
    wanted = request.requested_output_names or list(declared)
    hidden = {spec.output_name for spec in specs if spec.output_name not in wanted}
    if hidden:
        request.outputs = [RequestedOutput(name) for name in wanted] + [RequestedOutput(n) for n in sorted(hidden)]
    return hidden


def take_state_outputs(response: InferResponse, specs: tuple[StateSpec, ...], hidden: set[str]) -> StateTensors:
    """The next state from `response` (whose hidden state outputs are removed); raises ModelExecutionError when
    the model's state output has another datatype than the state's."""
    by_name = {tensor.name: tensor for tensor in response.outputs}
    states = {}
    for spec in specs:
        tensor = by_name.get(spec.output_name)
        if tensor is None:
            raise ModelExecutionError(f"model '{response.model_name}' did not return state output '{spec.output_name}'")
        if tensor.datatype != spec.datatype.wire_name:
            raise ModelExecutionError(
                f"model '{response.model_name}' returned state output '{spec.output_name}' as {tensor.datatype}; "
                f"its sequence_batching state declares {spec.datatype.wire_name}"
            )
        states[spec.input_name] = InferTensor(spec.input_name, tensor.datatype, tensor.shape, tensor.data)
    if hidden:
        response.outputs = [tensor for tensor in response.outputs if tensor.name not in hidden]
    return states
