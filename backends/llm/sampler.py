"""Turning each sampling row's logits into a token, as its request's SamplingParams say.

Order: penalties (repetition over prompt and output, presence/frequency over output),
min_tokens (stop tokens masked), then greedy argmax, or temperature -> top-k -> top-p ->
min-p -> a draw (from the request's own generator when it has a seed). Logprobs are of
the model's distribution (log-softmax of the raw logits), as vLLM reports them.

This runs once per engine step for the whole batch, and is queued device work only
(`sample_on_device`): penalties from token histories kept on the device
(device_penalties.py), the stop tokens of rows before their min_tokens masked by an index
sent from pinned memory, an argmax for greedy rows, the filtered draw of device_sampling.py
for the others (seeded rows each from their own generator), the logprobs of the rows that
ask (logprob_rows.py), and an asynchronous copy to pinned host memory. Nothing waits for the
device, so the next decode step can be launched before the tokens reach the host, whatever
the requests asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from modelgate.backends.llm.device_penalties import PenaltyHistory
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

    `sample_on_device` only queues the choice and an asynchronous copy to pinned host memory, so the caller can
    do CPU work while the GPU finishes the step. `output`: a result already on the host (a step sampling none).
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
        self._logprobs = logprobs  # on their way to the host with the tokens
        # The tokens where they were computed, row i for request_ids[i]: a decode step
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
        self._penalties = PenaltyHistory()

    def forget(self, request_id: str) -> None:
        self._generators.pop(request_id, None)
        self._penalties.forget(request_id)

    def sample(self, logits: torch.Tensor, requests: list[LLMRequest]) -> SamplerOutput:
        """One token per row; `logits` [num_rows, vocab_size] (row i for requests[i]) is never changed."""
        return self.sample_async(logits, requests).result()

    def sample_async(
        self, logits: torch.Tensor, requests: list[LLMRequest], outputs_before: list[int] | None = None
    ) -> PendingSample:
        """`sample`, returning before the tokens reach the host (see PendingSample). `outputs_before`: each
        request's output tokens before this row's (its min_tokens and penalties count them), where some are
        still on the device (a step launched ahead); None: those on the host (`num_output_tokens`)."""
        chosen = sample_on_device(logits, requests, self._generator, outputs_before, self._penalties)
        return _copy_to_host(chosen, [r.request_id for r in requests], logprob_rows(logits, requests, chosen))

    def _generator(self, request: LLMRequest, device) -> torch.Generator:
        generator = self._generators.get(request.request_id)
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(request.sampling.seed)
            self._generators[request.request_id] = generator
        return generator


def sample_on_device(
    logits: torch.Tensor,
    requests: list[LLMRequest],
    generator_for: GeneratorFor | None = None,
    outputs_before: list[int] | None = None,
    penalties: PenaltyHistory | None = None,
) -> torch.Tensor:
    """[num_rows] int64 on the logits' device, as queued device work only (no host synchronization): the
    argmax for greedy rows, a draw from the filtered distribution (device_sampling.py) for the others: one
    batched draw for the unseeded rows, and for each seeded row one from its request's own generator
    (`generator_for`), so that a seeded request's tokens depend on its seed alone. Penalized rows are penalized
    first (`penalties`, the requests' token histories, which this extends with the tokens chosen); rows
    before their request's min_tokens choose with the stop tokens masked. `outputs_before` (default: each
    request's outputs on the host): see Sampler.sample_async.

    `logits` [num_rows, vocab_size] (row i for requests[i]) is not changed.
    """
    if outputs_before is None:
        outputs_before = [r.num_output_tokens for r in requests]
    penalized = any(r.sampling.uses_penalties for r in requests)
    if penalized:
        if penalties is None:
            raise ValueError("penalized requests need penalties: their token histories are kept there")
        logits = penalties.penalized(logits, requests, outputs_before)
    chosen = _choose(_masked_before_min_tokens(logits, requests, outputs_before), requests, generator_for)
    if penalized:
        penalties.record(chosen, requests, outputs_before)
    return chosen


def _choose(logits: torch.Tensor, requests: list[LLMRequest], generator_for: GeneratorFor | None) -> torch.Tensor:
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


def _stop_ids_to_mask(request: LLMRequest, outputs_before: int) -> list[int]:
    """The stop token ids that min_tokens forbids for the request's token after `outputs_before` output tokens;
    none once min_tokens are out."""
    sampling = request.sampling
    if outputs_before >= sampling.min_tokens:
        return []
    return list(sampling.stop_token_ids) + ([] if sampling.ignore_eos else list(request.eos_token_ids))


def _masked_before_min_tokens(
    logits: torch.Tensor, requests: list[LLMRequest], outputs_before: list[int]
) -> torch.Tensor:
    """`logits` with -inf at the stop tokens of the rows before their min_tokens: a copy, the (row, token)
    pairs sent from pinned memory; `logits` itself where no row masks any (the common case: no min_tokens,
    or nothing to stop on, as with ignore_eos and no stop_token_ids)."""
    rows: list[int] = []
    tokens: list[int] = []
    for row, request in enumerate(requests):
        if request.sampling.min_tokens == 0:
            continue
        stops = _stop_ids_to_mask(request, outputs_before[row])
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
