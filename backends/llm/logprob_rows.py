"""The logprobs a step reports: for each sampled row whose request asked (SamplingParams.logprobs = n), the
model's distribution (log-softmax of the raw logits) at the chosen token and at the row's n most likely ones.

Computed in two halves, so that sampling stays queued device work (sampler.py, which lets the next decode step
be launched before this one's tokens reach the host): `logprob_rows` is device
work only (the rows that asked are picked with an index sent from pinned memory, never by reading a device
value), `LogprobRows.to_host` queues the copies to pinned host memory, and `LogprobRows.by_request`, once they
have arrived, builds each request's {token id: logprob}.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from modelgate.backends.llm.request import LLMRequest


class LogprobRows(NamedTuple):
    """The logprobs of the requests that asked, in row order; the tensors on the device until `to_host`."""

    request_ids: list[str]
    num_top: list[int]  # each request's n
    chosen: torch.Tensor  # [num_asked] float32: the chosen token's logprob
    top_ids: torch.Tensor | None  # [num_asked, max n] int64, most likely first; None where every n is 0
    top_values: torch.Tensor | None  # [num_asked, max n] float32

    def to_host(self) -> LogprobRows:
        """The same rows with their tensors copied to pinned host memory: on CUDA queued copies, complete once an
        event recorded after them has (PendingSample); on the CPU the rows themselves."""
        if self.chosen.device.type != "cuda":
            return self
        return self._replace(
            chosen=_pinned_copy(self.chosen),
            top_ids=None if self.top_ids is None else _pinned_copy(self.top_ids),
            top_values=None if self.top_values is None else _pinned_copy(self.top_values),
        )

    def by_request(self, token_ids: dict[str, int]) -> dict[str, dict[int, float]]:
        """request id -> {token id: logprob} of its chosen token (`token_ids`: the step's, by request) and its n
        most likely tokens; the tensors are on the host."""
        chosen = self.chosen.tolist()
        top_ids = [] if self.top_ids is None else self.top_ids.tolist()
        top_values = [] if self.top_values is None else self.top_values.tolist()
        result = {}
        for position, request_id in enumerate(self.request_ids):
            values = {token_ids[request_id]: chosen[position]}
            num_top = self.num_top[position]
            if num_top:
                values.update(zip(top_ids[position][:num_top], top_values[position][:num_top]))
            result[request_id] = values
        return result


def logprob_rows(raw: torch.Tensor, requests: list[LLMRequest], chosen: torch.Tensor) -> LogprobRows | None:
    """The logprobs of the rows of `raw` [num_rows, vocab] (the raw logits, row i for requests[i]; not
    changed) whose requests asked, at `chosen` [num_rows] int64 (the tokens chosen, on raw's device); None when
    none asked. Device work only: nothing is read back to the host."""
    asked = [row for row, request in enumerate(requests) if request.sampling.logprobs is not None]
    if not asked:
        return None
    if len(asked) < len(requests):
        device = raw.device
        index = torch.tensor(asked, dtype=torch.long, pin_memory=device.type == "cuda").to(device, non_blocking=True)
        raw, chosen = raw.index_select(0, index), chosen.index_select(0, index)
    log_probs = torch.log_softmax(raw.float(), dim=-1)
    num_top = [requests[row].sampling.logprobs for row in asked]
    top_ids = top_values = None
    if max_top := max(num_top):
        top_values, top_ids = torch.topk(log_probs, max_top, dim=-1)  # sorted: each row's first n are its top n
    return LogprobRows(
        request_ids=[requests[row].request_id for row in asked],
        num_top=num_top,
        chosen=log_probs.gather(1, chosen.unsqueeze(1)).squeeze(1),
        top_ids=top_ids,
        top_values=top_values,
    )


def _pinned_copy(tensor: torch.Tensor) -> torch.Tensor:
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host
