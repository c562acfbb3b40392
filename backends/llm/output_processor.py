"""From sampled tokens to what clients get: incremental text, stop strings, finish reasons.

Stop strings are matched on the detokenized text; while a request streams, the last
(longest stop string - 1) characters are held back so a stop string is never half sent.

`process` runs for every request on every step. A request without stop strings keeps no
text at all: its new text is exactly what the detokenizer completed this step. A request
with stop strings keeps only the window where a stop string can still start: the
unsent text and the `hold_back` characters before it.
"""

from __future__ import annotations

import time

from modelgate.backends.llm.detokenizer import IncrementalDetokenizer
from modelgate.backends.llm.engine_messages import RequestOutput
from modelgate.backends.llm.request import LLMRequest
from modelgate.backends.llm.tokenizer import TextTokenizer


class _TextState:
    def __init__(self, tokenizer: TextTokenizer, request: LLMRequest):
        self.detokenizer = IncrementalDetokenizer(tokenizer, request.prompt_token_ids)
        self.stops = request.sampling.stop
        self.hold_back = max((len(s) for s in self.stops), default=1) - 1
        # With stop strings: characters sent so far, and the text from character `window_start` on, where
        # window_start = max(0, emitted - hold_back); the next stop search starts there.
        self.emitted = 0
        self.window = ""
        self.window_start = 0
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
        reported = state.num_tokens_reported
        new_ids = request.output_token_ids[reported:]
        logprobs = request.output_logprobs[reported:]
        state.num_tokens_reported = reported + len(new_ids)
        is_finished = request.is_finished
        added = state.detokenizer.add(new_ids) if new_ids else ""
        if is_finished:
            added += state.detokenizer.flush()
        if state.stops:
            new_text, stopped = self._visible_text(state, request, added, is_finished)
        else:
            new_text, stopped = added, False
        finished = is_finished or stopped
        reason = "stop" if stopped else (request.status.value if is_finished else None)
        output = RequestOutput(
            request.request_id,
            new_ids,
            new_text,
            finished,
            reason,
            request.num_prompt_tokens,
            state.num_tokens_reported,
            request.num_cached_prompt_tokens,
            logprobs,
        )
        if reported == 0 and request.first_scheduled_time is not None:
            output.queue_time_s = request.first_scheduled_time - request.arrival_time
        if reported == 0 and new_ids:
            output.engine_ttft_s = time.monotonic() - request.arrival_time
        if finished:
            self.drop(request.request_id)
        return output, stopped

    def _visible_text(self, state: _TextState, request: LLMRequest, added: str, is_finished: bool) -> tuple[str, bool]:
        """For a request with stop strings: the text to send now, and whether a stop string ended it."""
        start = state.window_start
        window = state.window + added  # the text from character `start` on
        hits = [(index, stop) for stop in state.stops if (index := window.find(stop)) >= 0]
        stopped = bool(hits)
        if stopped:
            index, stop = min(hits)
            request.stop_reason = stop
            window = window[: index + len(stop) if request.sampling.include_stop_str_in_output else index]
        text_length = start + len(window)
        if is_finished or stopped:
            visible_end = text_length
        else:
            visible_end = max(state.emitted, text_length - state.hold_back)
        new_text = window[state.emitted - start : visible_end - start]
        state.emitted = visible_end
        state.window_start = max(0, visible_end - state.hold_back)
        state.window = window[state.window_start - start :]
        return new_text, stopped
