"""InferResponses of an LLM model: text, finish reason, token counts and logprobs as tensors."""

from __future__ import annotations

import json

import numpy as np

from modelgate.backends.llm.tokenizer import TextTokenizer
from modelgate.core.inference_types import InferResponse, InferTensor

OUTPUT_NAMES = ("text_output", "finish_reason", "num_input_tokens", "num_output_tokens", "logprobs")


def build_response(model_name: str, version: str, request_id: str, wanted: list[str], values: dict) -> InferResponse:
    """`values` maps output names to Python values; only `wanted` outputs are included."""
    outputs = [_tensor(name, values[name]) for name in wanted if name in values]
    return InferResponse(model_name, version, id=request_id, outputs=outputs)


def logprobs_json(tokenizer: TextTokenizer, token_ids: list[int], logprobs: list[dict[int, float]]) -> str:
    """Per new token: its id, text, logprob, and the top alternatives."""
    entries = []
    for token_id, values in zip(token_ids, logprobs):
        top = sorted(values.items(), key=lambda item: -item[1])
        entries.append(
            {
                "token_id": token_id,
                "token": tokenizer.decode([token_id], skip_special_tokens=False),
                "logprob": values.get(token_id),
                "top_logprobs": [
                    {"token_id": t, "token": tokenizer.decode([t], skip_special_tokens=False), "logprob": lp}
                    for t, lp in top
                ],
            }
        )
    return json.dumps(entries, ensure_ascii=False)


def _tensor(name: str, value) -> InferTensor:
    # np.empty and a store: half the cost of np.array([value]), paid for every output of every streamed token.
    if isinstance(value, str):
        data = np.empty(1, dtype=object)
        data[0] = value.encode("utf-8")
        return InferTensor(name, "BYTES", (1,), data)
    data = np.empty(1, dtype=np.int32)
    data[0] = value
    return InferTensor(name, "INT32", (1,), data)
