"""The filtered draw of a batch, as device work only: the sampled rows of `sampler.sample_on_device`.

A CUDA step's sampling must not wait for the GPU, or the next decode step cannot be queued behind it
(ModelRunner.launch_ahead). So nothing here reads a device value on the host: the per-row settings are packed
on the host into one pinned tensor and copied asynchronously; filters are masks applied with masked_fill_ and
torch.where (boolean-index assignment would call nonzero, which waits); which filters run at all is decided
from the settings on the host; and the draw is an exponential race (argmax of probability / Exponential(1)
noise) rather than torch.multinomial.

The filters are vLLM's, in float32: temperature scaling,
top-k keeping the tokens tied with the k-th largest logit, top-p dropping the tokens whose strictly more
likely tokens already hold top_p, min-p relative to the row's most likely token.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from modelgate.backends.llm.sampling_params import SamplingParams

# Noise below this is raised to it: a zero would make 0 / 0 = NaN for a filtered-out token, and argmax takes
# NaN for the largest. Exponential(1) draws this small have probability ~1e-38.
_MIN_NOISE = torch.finfo(torch.float32).tiny


class RowSettings(NamedTuple):
    """A batch's sampling settings on the device (row i for requests[i]), and what the host knows of them.

    Greedy rows are drawn like the others, with every filter off and temperature 1 (0 would divide by zero),
    and their draw is then replaced by the raw logits' argmax.
    """

    is_greedy: torch.Tensor  # [num_rows] bool
    temperature: torch.Tensor  # [num_rows, 1] float32
    top_k_index: torch.Tensor  # [num_rows, 1] int64: k - 1, or -1 where top-k is off
    top_p: torch.Tensor  # [num_rows, 1] float32: inf where top-p is off
    min_p: torch.Tensor  # [num_rows, 1] float32: 0 where min-p is off
    max_top_k: int  # the largest k of the batch; 0 when no row uses top-k
    uses_top_p: bool
    uses_min_p: bool
    has_greedy_rows: bool


def row_settings(samplings: list[SamplingParams], vocab: int, device: torch.device) -> RowSettings:
    """The settings of `samplings` (one per row) on `device`, sent by one asynchronous copy from pinned memory."""
    rows = [_settings_row(sampling, vocab) for sampling in samplings]
    packed = torch.tensor(rows, dtype=torch.float32, pin_memory=device.type == "cuda")  # [num_rows, 5]
    on_device = packed.to(device, non_blocking=True)
    return RowSettings(
        is_greedy=on_device[:, 0] != 0.0,
        temperature=on_device[:, 1:2],
        top_k_index=on_device[:, 2:3].long(),  # exact: k < 2**24
        top_p=on_device[:, 3:4],
        min_p=on_device[:, 4:5],
        max_top_k=int(max(row[2] for row in rows)) + 1,
        uses_top_p=any(row[3] != math.inf for row in rows),
        uses_min_p=any(row[4] > 0.0 for row in rows),
        has_greedy_rows=any(row[0] for row in rows),
    )


def _settings_row(sampling: SamplingParams, vocab: int) -> tuple[float, float, float, float, float]:
    """(is_greedy, temperature, top-k index, top_p, min_p) with each filter that does nothing turned off,
    as a filter that keeps everything: top-k outside (0, vocab), top-p of 1."""
    if sampling.is_greedy:
        return (1.0, 1.0, -1.0, math.inf, 0.0)
    top_k_index = sampling.top_k - 1 if 0 < sampling.top_k < vocab else -1
    top_p = sampling.top_p if sampling.top_p < 1.0 else math.inf
    return (0.0, sampling.temperature, float(top_k_index), top_p, sampling.min_p)


def filtered_probabilities(logits: torch.Tensor, settings: RowSettings) -> torch.Tensor:
    """[num_rows, vocab] float32 probabilities after temperature, top-k, top-p and min-p (not renormalized:
    filtered-out tokens hold 0, the others their softmax probability)."""
    scaled = logits / settings.temperature  # a new float32 tensor: the filters below work in place on it
    if settings.max_top_k:
        _keep_top_k(scaled, settings.top_k_index, settings.max_top_k)
    probs = torch.softmax(scaled, dim=-1)
    if settings.uses_top_p:
        _keep_top_p(probs, settings.top_p)
    if settings.uses_min_p:
        _keep_min_p(probs, settings.min_p)
    return probs


def _keep_top_k(scaled: torch.Tensor, top_k_index: torch.Tensor, max_top_k: int) -> None:
    """-inf below each row's k-th largest value (ties with it are kept), in place; rows with index -1 keep all."""
    values = torch.topk(scaled, max_top_k, dim=-1).values  # [num_rows, max_top_k], sorted, descending
    kth = values.gather(1, top_k_index.clamp(min=0))  # [num_rows, 1]
    threshold = torch.where(top_k_index >= 0, kth, float("-inf"))
    scaled.masked_fill_(scaled < threshold, float("-inf"))


def _keep_top_p(probs: torch.Tensor, top_p: torch.Tensor) -> None:
    """Zero the tokens outside each row's nucleus, in place: those whose strictly more likely tokens (in the
    sorted order) already hold top_p [num_rows, 1]; rows with top_p inf keep all."""
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of strictly more likely tokens
    drop_sorted = before >= top_p
    drop = torch.empty_like(drop_sorted).scatter_(1, order, drop_sorted)  # order is a permutation: all written
    probs.masked_fill_(drop, 0.0)


def _keep_min_p(probs: torch.Tensor, min_p: torch.Tensor) -> None:
    """Zero the tokens less likely than min_p [num_rows, 1] times their row's most likely one, in place."""
    probs.masked_fill_(probs < min_p * probs.amax(dim=-1, keepdim=True), 0.0)


def seeded_race(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[1] int64: a draw of `probs` [vocab] (not changed) with noise from `generator`, a seeded request's own.

    torch.multinomial makes the same draw (exponential noise, division, argmax) but first checks its input with
    a read back to the host, which would stop a step from being queued ahead; this is the draw without it."""
    noise = torch.empty_like(probs).exponential_(generator=generator).clamp_min_(_MIN_NOISE)
    return (probs / noise).argmax(dim=-1, keepdim=True)


def exponential_race(probs: torch.Tensor) -> torch.Tensor:
    """[num_rows] int64: a draw of each row of `probs` [num_rows, vocab] (non-negative, any positive sum),
    token i with probability probs[i] / sum(probs).

    argmax of probs[i] / E_i with E_i ~ Exponential(1) independent: E_i / probs[i] ~ Exponential(probs[i]), and
    the smallest of independent exponentials is the i-th with probability rate_i / sum of rates (the Gumbel-max
    trick, in the probability domain). It needs no normalized rows: one noise fill, one division, one argmax.
    Uses the device's default generator; `probs` is overwritten."""
    noise = torch.empty_like(probs).exponential_().clamp_min_(_MIN_NOISE)
    return probs.div_(noise).argmax(dim=-1)
