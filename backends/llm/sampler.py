"""Turning each sampling row's logits into a token, as its request's SamplingParams say.

Order: penalties (repetition over prompt and output, presence/frequency over output),
min_tokens (stop tokens masked), then greedy argmax, or temperature -> top-k -> top-p ->
min-p -> a draw (from the request's own generator when it has a seed). Logprobs are of
the model's distribution (log-softmax of the raw logits), as vLLM reports them.

This runs once per engine step for the whole batch, so the work is batched. A batch whose
requests all `samples_on_device` (greedy or drawn, with no penalties: the common serving
cases, logprobs and min_tokens included) is queued device work only (`sample_on_device`, and
logprob_rows.py for the logprobs): the stop tokens of rows before their min_tokens masked by
an index sent from pinned memory, an argmax for greedy rows, the filtered draw of
device_sampling.py for the others (seeded rows each from their own generator), and an
asynchronous copy to pinned host memory, so the next decode step can be launched before the
tokens reach the host. Any other batch takes the general path, which waits for the device:
the logits are copied only when some row is changed (penalties, min_tokens); top-k, top-p,
min-p, unseeded draws and logprobs run on all their rows at once. Only seeded draws go
row by row, each from its request's own generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from modelgate.backends.llm.device_sampling import exponential_race, filtered_probabilities, row_settings, seeded_race
from modelgate.backends.llm.logprob_rows import LogprobRows, logprob_rows
from modelgate.backends.llm.request import LLMRequest

# A seeded request's own generator on a device (Sampler._generator): made at its first draw, kept until forgotten.
GeneratorFor = Callable[[LLMRequest, torch.device], torch.Generator]


@dataclass
class SamplerOutput:
    token_ids: dict[str, int]
    logprobs: dict[str, dict[int, float]]  # only for requests that asked: sampled + top-n


class PendingSample:
    """A step's sampled tokens, possibly still on their way from the GPU: `result()` waits for them.

    The device path (`sample_on_device`) only queues the choice and an asynchronous copy to pinned host memory,
    so the caller can do CPU work while the GPU finishes the step; the general path is computed at once.
    """

    def __init__(
        self,
        output: SamplerOutput | None = None,
        request_ids=None,
        host=None,
        copied=None,
        device_tokens: torch.Tensor | None = None,
        logprobs: LogprobRows | None = None,
    ):
        self._output, self._request_ids, self._host, self._copied = output, request_ids, host, copied
        self._logprobs = logprobs  # the device path's, on their way to the host with the tokens
        # The device path's tokens where they were computed, row i for request_ids[i]: a decode step
        # launched ahead feeds them to the model without waiting for the host copy (engine.launch_decode_ahead).
        self.device_tokens = device_tokens

    def result(self) -> SamplerOutput:
        if self._output is None:
            if self._copied is not None:
                self._copied.synchronize()
            token_ids = dict(zip(self._request_ids, self._host.tolist()))
            logprobs = {} if self._logprobs is None else self._logprobs.by_request(token_ids)
            self._output = SamplerOutput(token_ids, logprobs)
        return self._output


class Sampler:
    def __init__(self):
        self._generators: dict[str, torch.Generator] = {}

    def forget(self, request_id: str) -> None:
        self._generators.pop(request_id, None)

    def sample(self, logits: torch.Tensor, requests: list[LLMRequest]) -> SamplerOutput:
        """One token per row; `logits` [num_rows, vocab_size] (row i for requests[i]) is never changed."""
        return self.sample_async(logits, requests).result()

    def sample_async(
        self, logits: torch.Tensor, requests: list[LLMRequest], outputs_before: list[int] | None = None
    ) -> PendingSample:
        """`sample`, returning before the tokens reach the host when every request `samples_on_device` (see
        PendingSample); otherwise the general path, computed at once. `outputs_before`: each request's output
        tokens before this row's (its min_tokens count them), where some are still on the device (a step
        launched ahead); None: those on the host (`num_output_tokens`)."""
        request_ids = [r.request_id for r in requests]
        if all(samples_on_device(r) for r in requests):
            chosen = sample_on_device(logits, requests, self._generator, outputs_before)
            return _copy_to_host(chosen, request_ids, logprob_rows(logits, requests, chosen))
        return PendingSample(self._sample_general(logits, requests, request_ids))

    def _sample_general(self, logits: torch.Tensor, requests: list[LLMRequest], request_ids) -> SamplerOutput:
        chosen = self._choose(_processed_logits(logits, requests), requests)
        token_ids = dict(zip(request_ids, chosen.tolist()))
        rows = logprob_rows(logits, requests, chosen)
        return SamplerOutput(token_ids, {} if rows is None else rows.by_request(token_ids))

    def _choose(self, logits: torch.Tensor, requests: list[LLMRequest]) -> torch.Tensor:
        """[num_rows] token ids: argmax for greedy rows, a draw for the others."""
        chosen = greedy_tokens(logits)
        random_rows = [i for i, r in enumerate(requests) if not r.sampling.is_greedy]
        if not random_rows:
            return chosen
        device = logits.device
        random_requests = [requests[i] for i in random_rows]
        probs = _filtered_probabilities(logits[random_rows], random_requests)  # [len(random_rows), vocab]
        unseeded = [p for p, r in enumerate(random_requests) if r.sampling.seed is None]
        if unseeded:
            draws = torch.multinomial(probs[unseeded], 1).squeeze(1)
            chosen[torch.tensor([random_rows[p] for p in unseeded], device=device)] = draws
        for position, request in enumerate(random_requests):
            if request.sampling.seed is not None:
                generator = self._generator(request, device)
                chosen[random_rows[position]] = seeded_race(probs[position], generator)[0]
        return chosen

    def _generator(self, request: LLMRequest, device) -> torch.Generator:
        generator = self._generators.get(request.request_id)
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(request.sampling.seed)
            self._generators[request.request_id] = generator
        return generator


def samples_on_device(request: LLMRequest) -> bool:
    """Whether `sample_on_device` can choose the request's token at any step: it `is_device_sampleable` (no
    penalties; its min_tokens mask, known from the number of its steps alone, is applied on the device).

    The one test behind both the sampler's path and ModelRunner.can_launch_ahead."""
    return request.is_device_sampleable


def sample_on_device(
    logits: torch.Tensor,
    requests: list[LLMRequest],
    generator_for: GeneratorFor | None = None,
    outputs_before: list[int] | None = None,
) -> torch.Tensor:
    """[num_rows] int64 on the logits' device, as queued device work only (no host synchronization): the
    argmax for greedy rows, a draw from the filtered distribution (device_sampling.py) for the others: one
    batched draw for the unseeded rows, and for each seeded row one from its request's own generator
    (`generator_for`), as the general path draws it, so a seeded request's tokens do not depend on the path.
    Rows before their request's min_tokens (`outputs_before`, see Sampler.sample_async) choose among the
    logits with the stop tokens masked, as the general path does.

    `logits` [num_rows, vocab_size] (row i for requests[i]) is not changed; every request `samples_on_device`.
    """
    logits = _masked_before_min_tokens(logits, requests, outputs_before)
    samplings = [r.sampling for r in requests]
    if all(s.is_greedy for s in samplings):
        return greedy_tokens(logits)
    device = logits.device
    settings = row_settings(samplings, logits.shape[1], device)
    probs = filtered_probabilities(logits, settings)
    seeded_rows = [row for row, s in enumerate(samplings) if not s.is_greedy and s.seed is not None]
    if seeded_rows:  # drawn before the race below overwrites probs
        if generator_for is None:
            raise ValueError("seeded requests need generator_for: their draws come from their own generators")
        seeded = [seeded_race(probs[row], generator_for(requests[row], device)) for row in seeded_rows]
    drawn = exponential_race(probs)
    if seeded_rows:
        index = torch.tensor(seeded_rows, dtype=torch.long, pin_memory=device.type == "cuda")
        drawn = drawn.index_copy(0, index.to(device, non_blocking=True), torch.cat(seeded))
    if not settings.has_greedy_rows:
        return drawn
    return torch.where(settings.is_greedy, greedy_tokens(logits), drawn)


def _copy_to_host(chosen: torch.Tensor, request_ids: list[str], logprobs: LogprobRows | None) -> PendingSample:
    """The pending result of `chosen` [num_rows] and the step's `logprobs`: on CUDA asynchronous copies to pinned
    memory are queued behind them and an event marks their end; on the CPU the tensors are already on the host."""
    if chosen.device.type != "cuda":
        return PendingSample(request_ids=request_ids, host=chosen, device_tokens=chosen, logprobs=logprobs)
    host = torch.empty(chosen.shape, dtype=chosen.dtype, pin_memory=True)
    host.copy_(chosen, non_blocking=True)
    host_logprobs = None if logprobs is None else logprobs.to_host()
    copied = torch.cuda.Event()
    copied.record()
    return PendingSample(request_ids, host, copied, device_tokens=chosen, logprobs=host_logprobs)


# greedy_tokens cuts each row into this many chunks when the vocabulary divides evenly (128256 = 128 x 1002)...
ARGMAX_CHUNKS = (128, 256, 64, 32)
# ...for rows at least this long (shorter ones take one argmax).
ARGMAX_MIN_VOCAB = 16384


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """[num_rows] int64: logits.argmax(-1), the first index of each row's max, as torch gives it.

    On a GPU, torch's argmax reduces a row of a 128K vocabulary in one thread block (~30-40 us on an H100 at
    batch 1, on the decode step's critical path): `chunked_argmax` spreads it over the SMs instead."""
    num_rows, vocab = logits.shape
    chunks = next((c for c in ARGMAX_CHUNKS if vocab % c == 0), 1) if vocab >= ARGMAX_MIN_VOCAB else 1
    if chunks == 1 or logits.device.type != "cuda" or not logits.is_contiguous():
        return logits.argmax(dim=-1)
    return chunked_argmax(logits, chunks)


def chunked_argmax(logits: torch.Tensor, chunks: int) -> torch.Tensor:
    """argmax(-1) of contiguous [num_rows, vocab] logits in two stages: the max of each of `chunks` equal
    chunks (vocab % chunks == 0), then the first chunk holding the row's max and its first index there, which
    is the row's first index of the max."""
    num_rows, vocab = logits.shape
    width = vocab // chunks
    chunk_max, index_in_chunk = logits.view(num_rows, chunks, width).max(dim=-1)
    chunk = chunk_max.argmax(dim=-1, keepdim=True)
    return (chunk * width + index_in_chunk.gather(1, chunk)).squeeze(1)


def _processed_logits(logits: torch.Tensor, requests: list[LLMRequest]) -> torch.Tensor:
    """The logits after penalties and min_tokens masks: a copy when some row changes, else `logits` itself."""
    rows = [i for i, r in enumerate(requests) if r.sampling.uses_penalties or _stop_ids_to_mask(r)]
    if not rows:
        return logits
    logits = logits.clone()
    for row in rows:
        _apply_penalties(logits[row], requests[row])
        stops = _stop_ids_to_mask(requests[row])
        if stops:
            logits[row, torch.tensor(stops, device=logits.device, dtype=torch.long)] = float("-inf")
    return logits


def _apply_penalties(row: torch.Tensor, request: LLMRequest) -> None:
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


def _stop_ids_to_mask(request: LLMRequest, outputs_before: int | None = None) -> list[int]:
    """The stop token ids that min_tokens forbids for the request's token after `outputs_before` output tokens
    (default: those on the host); none once min_tokens are out."""
    sampling = request.sampling
    if (len(request.output_token_ids) if outputs_before is None else outputs_before) >= sampling.min_tokens:
        return []
    return list(sampling.stop_token_ids) + ([] if sampling.ignore_eos else list(request.eos_token_ids))


def _masked_before_min_tokens(
    logits: torch.Tensor, requests: list[LLMRequest], outputs_before: list[int] | None
) -> torch.Tensor:
    """`logits` with -inf at the stop tokens of the rows before their min_tokens: a copy, the (row, token)
    pairs sent from pinned memory; `logits` itself where no row masks any (the common case: no min_tokens,
    or nothing to stop on, as with ignore_eos and no stop_token_ids)."""
    rows: list[int] = []
    tokens: list[int] = []
    for row, request in enumerate(requests):
        if request.sampling.min_tokens == 0:
            continue
        stops = _stop_ids_to_mask(request, None if outputs_before is None else outputs_before[row])
        rows += [row] * len(stops)
        tokens += stops
    if not rows:
        return logits
    device = logits.device
    pairs = torch.tensor([rows, tokens], dtype=torch.long, pin_memory=device.type == "cuda").to(
        device, non_blocking=True
    )
    # A device scalar: assigning a Python float would copy it from the host, and wait.
    return logits.index_put((pairs[0], pairs[1]), logits.new_full((), float("-inf")))


def _filtered_probabilities(logits: torch.Tensor, requests: list[LLMRequest]) -> torch.Tensor:
    """[num_rows, vocab] probabilities after temperature, top-k, top-p and min-p.

    device_sampling.filtered_probabilities computes the same on the device path: change both together."""
    device = logits.device
    temperatures = torch.tensor([r.sampling.temperature for r in requests], device=device).unsqueeze(1)
    logits = logits / temperatures
    vocab = logits.shape[1]
    top_k_rows = [i for i, r in enumerate(requests) if 0 < r.sampling.top_k < vocab]
    if top_k_rows:
        _keep_top_k(logits, top_k_rows, [requests[i].sampling.top_k for i in top_k_rows])
    probs = torch.softmax(logits, dim=-1)
    top_p_rows = [i for i, r in enumerate(requests) if r.sampling.top_p < 1.0]
    if top_p_rows:
        _keep_top_p(probs, top_p_rows, [requests[i].sampling.top_p for i in top_p_rows])
    if any(r.sampling.min_p > 0.0 for r in requests):
        min_p = torch.tensor([r.sampling.min_p for r in requests], device=device).unsqueeze(1)
        probs[probs < min_p * probs.max(dim=-1, keepdim=True).values] = 0.0  # rows with min_p 0 keep all
    return probs


def _keep_top_k(logits: torch.Tensor, rows: list[int], top_ks: list[int]) -> None:
    """-inf below each row's k-th largest logit (ties with it are kept), in place."""
    subset = logits[rows]
    values = torch.topk(subset, max(top_ks), dim=-1).values  # sorted, descending
    index = torch.tensor(top_ks, device=logits.device).sub_(1).unsqueeze(1)
    thresholds = values.gather(1, index)
    subset[subset < thresholds] = float("-inf")
    logits[rows] = subset


def _keep_top_p(probs: torch.Tensor, rows: list[int], top_ps: list[float]) -> None:
    """Zero the tokens outside each row's nucleus: those whose more likely tokens already hold top_p."""
    subset = probs[rows]
    sorted_probs, order = torch.sort(subset, dim=-1, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of strictly more likely tokens
    drop_sorted = before >= torch.tensor(top_ps, device=probs.device, dtype=probs.dtype).unsqueeze(1)
    drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
    subset[drop] = 0.0
    probs[rows] = subset
