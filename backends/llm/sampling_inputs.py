"""Sampling settings sent as scalar input tensors, named as Triton's tensorrtllm backend names them.

The tensorrtllm ensemble (and its tensorrt_llm_bls model) takes `max_tokens`, `temperature`, `top_k`, ... as
input tensors of one element rather than vLLM's JSON `sampling_parameters`. Clients written for it send
those: genai-perf's `--endpoint-type kserve --backend tensorrtllm` sends `text_input`, `max_tokens`,
`exclude_input_in_output`, `stream` and, with `--output-tokens-mean-deterministic`, `min_length` (the
ensemble's name for `min_tokens` before TensorRT-LLM renamed it); `--extra-inputs NAME:VALUE` adds any other.
An LLM model declares these inputs (all optional), so such a request is valid here as it is on Triton.

Each input sets one SamplingParams field; the datatypes are the ensemble's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from tritonclient.grpc.model_config_pb2 import DataType

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.inference_types import InferRequest


class SamplingInput(NamedTuple):
    name: str  # the input tensor
    field: str  # the SamplingParams field it sets
    data_type: int  # DataType


# Order matters where two inputs set one field: the later one wins (`min_tokens` over the older `min_length`).
SAMPLING_INPUTS = (
    SamplingInput("max_tokens", "max_tokens", DataType.TYPE_INT32),
    SamplingInput("min_length", "min_tokens", DataType.TYPE_INT32),
    SamplingInput("min_tokens", "min_tokens", DataType.TYPE_INT32),
    SamplingInput("temperature", "temperature", DataType.TYPE_FP32),
    SamplingInput("top_k", "top_k", DataType.TYPE_INT32),
    SamplingInput("top_p", "top_p", DataType.TYPE_FP32),
    SamplingInput("seed", "seed", DataType.TYPE_UINT64),
    SamplingInput("repetition_penalty", "repetition_penalty", DataType.TYPE_FP32),
    SamplingInput("presence_penalty", "presence_penalty", DataType.TYPE_FP32),
    SamplingInput("frequency_penalty", "frequency_penalty", DataType.TYPE_FP32),
)


def sampling_fields_from_inputs(request: InferRequest) -> dict[str, Any]:
    """The SamplingParams fields that the request's scalar sampling inputs set (Python numbers).

    InvalidArgumentError naming the input when one does not hold exactly one element. Ranges are checked by
    parse_sampling_params, with the other fields.
    """
    fields = {}
    for sampling_input in SAMPLING_INPUTS:
        tensor = request.inputs.get(sampling_input.name)
        if tensor is not None:
            fields[sampling_input.field] = _scalar(sampling_input.name, tensor.data)
    return fields


def _scalar(name: str, data) -> Any:
    values = data.reshape(-1)
    if values.size != 1:
        raise InvalidArgumentError(f"input '{name}' must hold exactly one element, got {values.size}")
    return values[0].item()
