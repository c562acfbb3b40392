"""From sampled tokens to what clients get: incremental text, stop strings, finish reasons.

Stop strings are matched on the detokenized text; while a request streams, the last
(longest stop string - 1) characters are held back so a stop string is never half sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.llm.detokenizer import IncrementalDetokenizer
from backends.llm.request import LLMRequest
from backends.llm.tokenizer import TextTokenizer


@dataclass
class RequestOutput:
    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    finish_reason: str | None  # "stop", "length" or "abort" once finished
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    logprobs: list[dict[int, float]] = field(default_factory=list)  # one dict per new token
    queue_time_s: float | None = None  # on a request's first output: arrival to first schedule


class _TextState:
    def __init__(self, tokenizer: TextTokenizer, request: LLMRequest):
        self.detokenizer = IncrementalDetokenizer(tokenizer, request.prompt_token_ids)
        self.stops = request.sampling.stop
        self.hold_back = max((len(s) for s in self.stops), default=1) - 1
        self.emitted = 0
        self.num_tokens_reported = 0


class OutputProcessor:
    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer = tokenizer
        self._states: dict[str, _TextState] = {}

    def add(self, request: LLMRequest) -> None:
        self._states[request.request_id] = _TextState(self.tokenizer, request)

    def drop(self, request_id: str) -> None:
        self._states.pop(request_id, None)

    def process(self, request: LLMRequest) -> tuple[RequestOutput, bool]:
        """This step's output for `request`, and whether a stop string finished it."""
        state = self._states[request.request_id]
        is_first = state.num_tokens_reported == 0
        new_ids = request.output_token_ids[state.num_tokens_reported :]
        logprobs = request.output_logprobs[state.num_tokens_reported :]
        state.num_tokens_reported = len(request.output_token_ids)
        state.detokenizer.add(new_ids)
        if request.is_finished:
            state.detokenizer.flush()
        text, stopped = self._text_after_stops(state, request)
        finished = request.is_finished or stopped
        visible_end = len(text) if finished else max(state.emitted, len(text) - state.hold_back)
        new_text = text[state.emitted : visible_end]
        state.emitted = visible_end
        reason = "stop" if stopped else (request.status.value if request.is_finished else None)
        output = RequestOutput(
            request.request_id, new_ids, new_text, finished, reason, request.num_prompt_tokens,
            request.num_output_tokens, request.num_cached_prompt_tokens, logprobs,
        )
        if is_first and request.first_scheduled_time is not None:
            output.queue_time_s = request.first_scheduled_time - request.arrival_time
        if finished:
            self.drop(request.request_id)
        return output, stopped

    def _text_after_stops(self, state: _TextState, request: LLMRequest) -> tuple[str, bool]:
        text = state.detokenizer.text
        if not state.stops:
            return text, False
        search_from = max(0, state.emitted - state.hold_back)
        hits = [(text.find(stop, search_from), stop) for stop in state.stops]
        hits = [(index, stop) for index, stop in hits if index >= 0]
        if not hits:
            return text, False
        index, stop = min(hits)
        request.stop_reason = stop
        end = index + len(stop) if request.sampling.include_stop_str_in_output else index
        return text[:end], True
