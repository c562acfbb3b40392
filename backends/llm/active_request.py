"""What the LLM backend keeps of one request while its engine generates for it (LLMModelInstance)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from modelgate.backends.llm.generation_request import GenerationRequest
from modelgate.core.inference_types import InferRequest
from modelgate.core.response_stream import ResponseStream


@dataclass(slots=True)
class ActiveRequest:
    stream: ResponseStream
    request: InferRequest
    generation: GenerationRequest
    wanted: list[str]
    wants_all: bool  # `wanted` is OUTPUT_NAMES, in that order: every value goes out as built
    # Streamed, answered with values (not tensors), every value wanted: its tokens take _deliver's short path.
    is_plain_stream: bool = False
    arrival: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    engine_ttft_s: float | None = None  # as the engine measured it (RequestOutput.engine_ttft_s)
    last_token_time: float | None = None
    text: str = ""
    # A streamed request: its tokens not yet in a response (their text was held back); empty nearly always, so
    # a step's tokens go out as the engine sent them. Otherwise: every token so far, for the one response.
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] = field(default_factory=list)
