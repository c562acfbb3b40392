"""A prompt given as token ids: input `input_ids` (INT32, one dimension), as the tensorrtllm backend names it, and
the form OpenAI's completions take as `prompt: [ids]`. The ids go to the engine as they are: no tokenization, so
the server's per-request cost no longer grows with the prompt's length, and a client that counts tokens itself
(trtllm-bench's synthetic prompts) sends exactly those.

Checked before anything reaches the engine: integers, at least one, fewer than the model's context, each in the
tokenizer's vocabulary (an id past the embedding would fail the engine's step, not this request).
"""

from __future__ import annotations

import numpy as np

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.inference_types import InferRequest

INPUT_IDS = "input_ids"
_TEXT_INPUTS = ("text_input", "chat_messages")


def prompt_token_ids(request: InferRequest, vocab_size: int, max_model_len: int) -> list[int] | None:
    """The request's prompt ids where it gives `input_ids`, else None; InvalidArgumentError naming the input."""
    tensor = request.inputs.get(INPUT_IDS)
    if tensor is None:
        return None
    if given := [name for name in _TEXT_INPUTS if name in request.inputs]:
        raise InvalidArgumentError(
            f"the request gives the prompt as '{INPUT_IDS}' and as '{given[0]}'; give it one way only"
        )
    values = np.asarray(tensor.data).reshape(-1)
    if not np.issubdtype(values.dtype, np.integer):
        raise InvalidArgumentError(f"input '{INPUT_IDS}' must hold integer token ids, got {tensor.datatype}")
    if values.size == 0:
        raise InvalidArgumentError(f"the prompt is empty; '{INPUT_IDS}' must hold at least one token id")
    if values.size >= max_model_len:  # before any per-id work: the context bounds what is worth looking at
        raise InvalidArgumentError(
            f"the prompt has {values.size} tokens; this model's context is {max_model_len} tokens "
            "and generation needs at least one more"
        )
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocab_size:
        wrong = low if low < 0 else high
        raise InvalidArgumentError(
            f"input '{INPUT_IDS}' holds token id {wrong}; ids must be in [0, {vocab_size}), the model's vocabulary"
        )
    return values.tolist()
