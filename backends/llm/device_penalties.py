"""Repetition, presence and frequency penalties as device work, so that sampling a batch with penalized requests
stays queued device work (sampler.sample_on_device) and its steps can be launched ahead.

A penalty needs every token of its request, the last one included, which in a step launched ahead is still on
the device. So the tokens are kept there: each penalized request holds a row of `PenaltyHistory`'s buffer, its
token ids (prompt, then outputs) written from the host when the sampler first meets the request, then extended
on the device with each token the sampler chooses for it (`record`, queued behind the choice). A step gathers
its penalized rows' histories and counts them over the vocabulary (one scatter_add for all rows), then applies
the penalties as vLLM does, in float32: repetition divides the positive logits of every token seen (prompt or
output) by the penalty and multiplies the negative ones; presence subtracts its value from the logit of every
token output so far, frequency its value times the token's count.

Where a token goes: the host tells each row's length (prompt plus outputs before this row's token, as
Sampler.sample_async counts them), so nothing is read back. Rows are given back when the engine forgets a
request; work queued for a request given back lands before anything queued for the next holder of its row.
"""

from __future__ import annotations

import torch

from modelgate.backends.llm.request import LLMRequest

# Penalized rows computed together (see PenaltyHistory.penalized).
CHUNK_ROWS = 32


class PenaltyHistory:
    """The device-side token histories of the penalized requests, one row each."""

    def __init__(self):
        self._rows: dict[str, int] = {}  # request id -> its row
        self._free: list[int] = []
        self._tokens: torch.Tensor | None = None  # [capacity, width] int32: each row's token ids

    def forget(self, request_id: str) -> None:
        row = self._rows.pop(request_id, None)
        if row is not None:
            self._free.append(row)

    def penalized(self, logits: torch.Tensor, requests: list[LLMRequest], outputs_before: list[int]) -> torch.Tensor:
        """`logits` [num_rows, vocab] with the penalties of its penalized rows applied: a copy (`logits` itself
        where none is penalized). `outputs_before[i]`: requests[i]'s outputs before this row's token."""
        positions = [i for i, request in enumerate(requests) if request.sampling.uses_penalties]
        if not positions:
            return logits
        device = logits.device
        penalized = [requests[i] for i in positions]
        lengths = [r.num_prompt_tokens + outputs_before[i] for i, r in zip(positions, penalized)]
        rows = [self._row_of(request, length, device) for request, length in zip(penalized, lengths)]
        # Per penalized row, in one copy: its row of the logits and of the buffer, its length, its prompt's
        # length, its penalties. float64 is exact for the integers and the float32 penalties alike.
        settings = _to_device(
            [
                [i, row, length, r.num_prompt_tokens, s.repetition_penalty, s.presence_penalty, s.frequency_penalty]
                for i, row, length, r, s in zip(positions, rows, lengths, penalized, (r.sampling for r in penalized))
            ],
            torch.float64,
            device,
        )
        width = max(lengths)
        out = logits.clone()
        # A few rows at a time: each holds [rows, vocab] counts and temporaries (~0.5 MB a row of a 128K
        # vocabulary, several times over), which a batch of hundreds would make a large transient allocation.
        for start in range(0, len(positions), CHUNK_ROWS):
            chunk = settings[start : start + CHUNK_ROWS]
            logits_rows = chunk[:, 0].long()
            out.index_copy_(0, logits_rows, self._penalize(logits.index_select(0, logits_rows), chunk, width))
        return out

    def _penalize(self, values: torch.Tensor, settings: torch.Tensor, width: int) -> torch.Tensor:
        """`values` [n, vocab] (the rows' logits) penalized; `settings` [n, 7] as `penalized` packs them."""
        vocab, device = values.shape[1], values.device
        history = self._tokens.index_select(0, settings[:, 1].long())[:, :width].long()  # [n, width]
        position = torch.arange(width, device=device)
        known = position < settings[:, 2:3]
        is_output = known & (position >= settings[:, 3:4])
        # Tokens outside a row's history (or, for the counts, in its prompt) go to a spare column, dropped.
        seen = _counts(torch.where(known, history, vocab), vocab)
        counts = _counts(torch.where(is_output, history, vocab), vocab)
        repetition = settings[:, 4:5].float()
        repeated = torch.where(values > 0, values / repetition, values * repetition)
        values = torch.where(seen > 0, repeated, values)
        presence, frequency = settings[:, 5:6].float(), settings[:, 6:7].float()
        return values - (frequency * counts + presence * (counts > 0).to(values.dtype))

    def record(self, chosen: torch.Tensor, requests: list[LLMRequest], outputs_before: list[int]) -> None:
        """Append each penalized row's chosen token (`chosen` [num_rows], on the device) to its history."""
        positions = [i for i, request in enumerate(requests) if request.sampling.uses_penalties]
        if not positions:
            return
        device = chosen.device
        targets = [
            [self._rows[requests[i].request_id], requests[i].num_prompt_tokens + outputs_before[i], i]
            for i in positions
        ]
        targets = _to_device(targets, torch.long, device)
        self._tokens.index_put_((targets[:, 0], targets[:, 1]), chosen.index_select(0, targets[:, 2]).int())

    def _row_of(self, request: LLMRequest, length: int, device: torch.device) -> int:
        """The request's row, with room for its token after `length`; made on first use (the request's first
        sampled row: its tokens are all on the host), its prompt and outputs written there."""
        row = self._rows.get(request.request_id)
        fresh = row is None
        if fresh:
            row = self._free.pop() if self._free else len(self._rows)
            self._rows[request.request_id] = row
        self._reserve(length + 1, device)
        if fresh:
            known = request.token_slice(0, length)
            self._tokens[row, : len(known)].copy_(_to_device(known, torch.int32, device))
        return row

    def _reserve(self, width: int, device: torch.device) -> None:
        """Room for every row held and `width` tokens each: the buffer grows by doubling (a device copy)."""
        rows = len(self._rows) + len(self._free)
        if self._tokens is not None and self._tokens.shape[0] >= rows and self._tokens.shape[1] >= width:
            return
        old = self._tokens
        capacity = max(8, rows) if old is None else max(old.shape[0], rows)
        if old is not None and old.shape[0] < rows:
            capacity = max(capacity, 2 * old.shape[0])
        columns = max(256, width) if old is None else max(old.shape[1], width)
        if old is not None and old.shape[1] < width:
            columns = max(columns, 2 * old.shape[1])
        self._tokens = torch.zeros((capacity, columns), dtype=torch.int32, device=device)
        if old is not None:
            self._tokens[: old.shape[0], : old.shape[1]].copy_(old)


def _counts(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """[n, vocab] float32: how often each token appears in each row of `tokens` [n, width] (values in
    [0, vocab]; vocab, a spare column, is dropped)."""
    counts = torch.zeros((tokens.shape[0], vocab + 1), dtype=torch.float32, device=tokens.device)
    counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=torch.float32))
    return counts[:, :vocab]


def _to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`values` on `device` by an asynchronous copy from pinned memory (no wait for the device)."""
    host = torch.tensor(values, dtype=dtype, pin_memory=device.type == "cuda")
    return host.to(device, non_blocking=True)
