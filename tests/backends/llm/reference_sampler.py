"""The per-row sampler that backends/llm/sampler.py replaced: the tests' reference for the same semantics."""

from __future__ import annotations

import torch

from modelgate.backends.llm.request import LLMRequest
from modelgate.backends.llm.sampler import SamplerOutput


class ReferenceSampler:
    def __init__(self):
        self._generators: dict[str, torch.Generator] = {}

    def forget(self, request_id: str) -> None:
        self._generators.pop(request_id, None)

    def sample(self, logits: torch.Tensor, requests: list[LLMRequest]) -> SamplerOutput:
        # logits: [num_rows, vocab_size] float32, row i for requests[i]
        raw = logits
        logits = logits.clone()
        for row, request in enumerate(requests):
            _apply_penalties(logits[row], request)
            _mask_stop_tokens_before_min(logits[row], request)
        chosen = self._choose(logits, requests)
        token_ids = {r.request_id: int(t) for r, t in zip(requests, chosen.tolist())}
        return SamplerOutput(token_ids, _logprobs(raw, requests, chosen))

    def _choose(self, logits: torch.Tensor, requests: list[LLMRequest]) -> torch.Tensor:
        chosen = logits.argmax(dim=-1)
        random_rows = [i for i, r in enumerate(requests) if not r.sampling.is_greedy]
        if not random_rows:
            return chosen
        rows = torch.tensor(random_rows, device=logits.device)
        probs = _filtered_probabilities(logits[rows], [requests[i] for i in random_rows])
        for position, index in enumerate(random_rows):
            generator = self._generator(requests[index], logits.device)
            chosen[index] = torch.multinomial(probs[position], 1, generator=generator)[0]
        return chosen

    def _generator(self, request: LLMRequest, device) -> torch.Generator | None:
        seed = request.sampling.seed
        if seed is None:
            return None
        generator = self._generators.get(request.request_id)
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)
            self._generators[request.request_id] = generator
        return generator


def _apply_penalties(row: torch.Tensor, request: LLMRequest) -> None:
    """vLLM's penalties on one row, counted on the host: repetition over prompt and outputs, presence and
    frequency over the outputs."""
    sampling = request.sampling
    if not sampling.uses_penalties:
        return
    if sampling.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(request.all_token_ids)), device=row.device, dtype=torch.long)
        values = row[seen]
        row[seen] = torch.where(values > 0, values / sampling.repetition_penalty, values * sampling.repetition_penalty)
    if request.output_token_ids and (sampling.presence_penalty or sampling.frequency_penalty):
        outputs = torch.tensor(request.output_token_ids, device=row.device, dtype=torch.long)
        counts = torch.bincount(outputs, minlength=row.shape[0]).to(row.dtype)
        row -= sampling.frequency_penalty * counts + sampling.presence_penalty * (counts > 0).to(row.dtype)


def _mask_stop_tokens_before_min(row: torch.Tensor, request: LLMRequest) -> None:
    sampling = request.sampling
    if request.num_output_tokens >= sampling.min_tokens:
        return
    stops = list(sampling.stop_token_ids) + ([] if sampling.ignore_eos else list(request.eos_token_ids))
    if stops:
        row[torch.tensor(stops, device=row.device, dtype=torch.long)] = float("-inf")


def _filtered_probabilities(logits: torch.Tensor, requests: list[LLMRequest]) -> torch.Tensor:
    """[num_rows, vocab] probabilities after temperature, top-k, top-p and min-p."""
    temperatures = torch.tensor([r.sampling.temperature for r in requests], device=logits.device).unsqueeze(1)
    logits = logits / temperatures
    for row, request in enumerate(requests):
        top_k = request.sampling.top_k
        if 0 < top_k < logits.shape[1]:
            threshold = torch.topk(logits[row], top_k).values[-1]
            logits[row][logits[row] < threshold] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    for row, request in enumerate(requests):
        _top_p_min_p(probs[row], request.sampling.top_p, request.sampling.min_p)
    return probs


def _top_p_min_p(probs: torch.Tensor, top_p: float, min_p: float) -> None:
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, 0) - sorted_probs  # mass of strictly more likely tokens
        drop = order[before >= top_p]
        probs[drop] = 0.0
    if min_p > 0.0:
        probs[probs < min_p * probs.max()] = 0.0


def _logprobs(raw: torch.Tensor, requests: list[LLMRequest], chosen: torch.Tensor) -> dict[str, dict[int, float]]:
    wanted = [(i, r) for i, r in enumerate(requests) if r.sampling.logprobs is not None]
    if not wanted:
        return {}
    log_probs = torch.log_softmax(raw[[i for i, _ in wanted]], dim=-1)
    result = {}
    for position, (row, request) in enumerate(wanted):
        values = {int(chosen[row]): float(log_probs[position, chosen[row]])}
        if request.sampling.logprobs:
            top = torch.topk(log_probs[position], request.sampling.logprobs)
            values.update({int(t): float(v) for t, v in zip(top.indices.tolist(), top.values.tolist())})
        result[request.request_id] = values
    return result
