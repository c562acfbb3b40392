"""The step scheduler: pure Python, no tensors.

Each step fits `max_num_batched_tokens` and `max_num_seqs`. Running requests go first (a
decode is one token; an unfinished prompt continues in chunks), then waiting ones in
arrival order, starting from their cached prefix. When blocks run out the newest running
request is preempted: its blocks are freed and it is recomputed later from the start.
Finished and aborted requests free their blocks in the step that finishes them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from modelgate.backends.llm.kv_cache_manager import KVCacheManager
from modelgate.backends.llm.request import LLMRequest, RequestStatus
from modelgate.backends.llm.stop_checker import check_stop


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: int = 2048
    enable_chunked_prefill: bool = True


@dataclass(slots=True)
class ScheduledRequest:
    """One request's share of a step: tokens [num_computed_tokens, +num_new_tokens).

    `block_ids` is the KV cache manager's live block table of the request (read only).
    """

    request: LLMRequest
    num_computed_tokens: int
    num_new_tokens: int
    block_ids: list[int]
    # Whether this step reaches the request's last known token, so a token is sampled. Fixed when the
    # step is built (the runner and update_from_output read it several times per request).
    samples: bool = field(init=False)
    # A decode scheduled ahead: its input token is the previous step's, still on the device (not on the request).
    token_on_device: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.samples = self.num_computed_tokens + self.num_new_tokens == self.request.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted_ids: list[str] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass
class StepResult:
    """What `update_from_output` reports: requests that got a token, and finished ones."""

    new_token_requests: list[LLMRequest] = field(default_factory=list)
    finished: list[LLMRequest] = field(default_factory=list)


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv_cache: KVCacheManager):
        self.config = config
        self.kv_cache = kv_cache
        self.waiting: deque[LLMRequest] = deque()
        self.running: list[LLMRequest] = []
        self.requests: dict[str, LLMRequest] = {}
        self.num_preemptions = 0

    # -- requests in and out -----------------------------------------------------------

    def add_request(self, request: LLMRequest) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id '{request.request_id}' is already in the engine")
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def abort(self, request_id: str) -> LLMRequest | None:
        """Finish a request now and free its blocks; None if it is not in the engine."""
        return self.finish(request_id, RequestStatus.FINISHED_ABORTED)

    def finish(self, request_id: str, status: RequestStatus) -> LLMRequest | None:
        """Finish a request with `status` (e.g. a stop string matched) and free its blocks."""
        request = self.requests.get(request_id)
        if request is None:
            return None
        self._finish(request, status)
        return request

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # -- one step ----------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        output = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        budget = self._schedule_running(output, budget)
        if not output.preempted_ids:
            self._schedule_waiting(output, budget)
        return output

    def schedule_ahead(
        self, previous: SchedulerOutput, admits: Callable[[LLMRequest], bool] | None = None
    ) -> SchedulerOutput | None:
        """The step after `previous` while previous's tokens are still being computed: one decode of each of
        its requests (`token_on_device`: the input is previous's token), then, with `admits`, the waiting
        requests that schedule() would admit; None when schedule() might do otherwise.

        It is: every running request was in `previous` and sampled there (no prefill chunk goes on). Requests
        that `previous` finishes for sure (max_tokens, the model's context) are left out; one that it finishes
        on a stop token (not known yet) gets a wasted row, which update_from_output skips as for an aborted one.
        Slots for both tokens are allocated now; None if they do not fit (schedule() then preempts as usual;
        blocks taken for earlier requests stay theirs).

        Waiting requests, when seats are free: without `admits`, None (they wait for schedule()); with it, they
        are admitted in arrival order up to the first it refuses (whose step must wait for the host, e.g. a
        token chosen there), and None if it refuses the first, so that schedule() admits that one next.
        """
        admitting = bool(self.waiting) and len(self.running) < self.config.max_num_seqs
        if admitting and (admits is None or not admits(self.waiting[0])):
            return None
        previous_requests = {id(item.request) for item in previous.scheduled if item.samples}
        if len(previous_requests) != len(previous.scheduled):
            return None
        if any(id(request) not in previous_requests for request in self.running):
            return None
        output = SchedulerOutput()
        max_model_len, allocate_slots, block_ids = (
            self.config.max_model_len,
            self.kv_cache.allocate_slots,
            self.kv_cache.block_ids,
        )
        for item in previous.scheduled:
            request = item.request
            if request.is_finished:
                continue
            num_output = request.num_output_tokens + 1  # with previous's token
            if num_output >= request.sampling.max_tokens or request.num_tokens + 1 >= max_model_len:
                continue
            if not allocate_slots(
                request, item.num_computed_tokens + item.num_new_tokens + 1 - request.num_computed_tokens
            ):
                return None
            ahead = ScheduledRequest(
                request, item.num_computed_tokens + item.num_new_tokens, 1, block_ids(request.request_id)
            )
            ahead.samples = True  # its token is previous's, which request.num_tokens does not count yet
            ahead.token_on_device = True
            output.scheduled.append(ahead)
        if admitting:
            self._schedule_waiting(output, self.config.max_num_batched_tokens - len(output.scheduled), admits)
        return output if output.scheduled else None

    def update_from_output(self, output: SchedulerOutput, sampled: dict[str, int], logprobs=None) -> StepResult:
        """Advance each scheduled request; append sampled tokens; finish stopped requests."""
        result = StepResult()
        new_token_requests, finished = result.new_token_requests, result.finished
        cache_full_blocks = self.kv_cache.cache_full_blocks
        max_model_len = self.config.max_model_len
        for item in output.scheduled:
            request = item.request
            if request.is_finished:
                continue  # aborted while the step ran
            request.num_computed_tokens = item.num_computed_tokens + item.num_new_tokens
            cache_full_blocks(request)
            if not item.samples:
                continue
            request_id = request.request_id
            request.output_token_ids.append(sampled[request_id])
            if logprobs and request_id in logprobs:
                request.output_logprobs.append(logprobs[request_id])
            new_token_requests.append(request)
            status = check_stop(request, max_model_len)
            if status is not None:
                self._finish(request, status, leave_in_running=True)
                finished.append(request)
        if finished:
            # One pass instead of a list.remove per finished request (a whole batch may finish together).
            self.running[:] = [r for r in self.running if not r.is_finished]
        return result

    # -- internals ---------------------------------------------------------------------

    def _schedule_running(self, output: SchedulerOutput, budget: int) -> int:
        running, scheduled = self.running, output.scheduled
        allocate_slots, block_ids = self.kv_cache.allocate_slots, self.kv_cache.block_ids
        index = 0
        while index < len(running) and budget > 0:
            request = running[index]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            while not allocate_slots(request, num_new):
                victim = running[-1]
                self._preempt(victim)
                output.preempted_ids.append(victim.request_id)
                if victim is request:
                    break
            else:
                scheduled.append(
                    ScheduledRequest(request, request.num_computed_tokens, num_new, block_ids(request.request_id))
                )
                budget -= num_new
                index += 1
                continue
            break  # the request itself was preempted
        return budget

    def _schedule_waiting(
        self, output: SchedulerOutput, budget: int, admits: Callable[[LLMRequest], bool] | None = None
    ) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            if admits is not None and not admits(request):
                break
            cached, num_cached = self.kv_cache.find_cached_prefix(request)
            num_new = request.num_tokens - num_cached
            if num_new > budget:
                if not self.config.enable_chunked_prefill:
                    break
                num_new = budget
            if not self.kv_cache.allocate_slots(request, num_new, cached):
                break
            self.waiting.popleft()
            request.num_computed_tokens = num_cached
            if request.first_scheduled_time is None:
                request.first_scheduled_time = time.monotonic()
                request.num_cached_prompt_tokens = num_cached
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            output.scheduled.append(self._scheduled(request, num_new))
            budget -= num_new

    def _scheduled(self, request: LLMRequest, num_new: int) -> ScheduledRequest:
        return ScheduledRequest(
            request, request.num_computed_tokens, num_new, self.kv_cache.block_ids(request.request_id)
        )

    def _preempt(self, request: LLMRequest) -> None:
        self.running.remove(request)
        self.kv_cache.free(request)
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        request.status = RequestStatus.PREEMPTED
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def _finish(self, request: LLMRequest, status: RequestStatus, leave_in_running: bool = False) -> None:
        """`leave_in_running`: a running request whose caller takes it out of `running` (all at once)."""
        request.status = status
        if leave_in_running:
            pass
        elif request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        self.kv_cache.free(request)
        self.requests.pop(request.request_id, None)
