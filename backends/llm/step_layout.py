"""A scheduled step laid out for the model: its new tokens back to back, on the host and on the device.

`StepLayout` is the host side (lists), from which each way of running a step takes what it needs: the eager
forward its tensors (`StepInputs`), the piecewise step graphs their staged buffers plus the attention's
metadata, the decode graphs their rows (`decode_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modelgate.backends.llm.attention.metadata import AttentionMetadata
from modelgate.backends.llm.scheduler import ScheduledRequest


@dataclass
class StepLayout:
    token_ids: list[int]  # [num_tokens]
    positions: list[int]  # [num_tokens]
    slots: list[int]  # [num_tokens]: the cache slot of each token's K/V
    query_start: list[int]  # [num_seqs + 1]: sequence i's tokens are [query_start[i], query_start[i + 1])
    context_lens: list[int]  # [num_seqs]: tokens in the cache after the step
    tables: list[list[int]]  # [num_seqs, max_blocks]: block tables padded with 0
    sample_rows: list[int]  # the rows whose logits are sampled (each sampling sequence's last token)
    is_decode_only: bool
    # The rows of decodes scheduled ahead (`token_on_device`): their token_ids are placeholders (0), for the
    # caller to fill on the device with the previous step's tokens, in this order.
    device_token_rows: list[int]

    @classmethod
    def of(cls, scheduled: list[ScheduledRequest], block_size: int) -> StepLayout:
        token_ids, positions, slots, query_start, context_lens, sample_rows = [], [], [], [0], [], []
        device_token_rows = []
        for item in scheduled:
            start, end = item.num_computed_tokens, item.num_computed_tokens + item.num_new_tokens
            if item.token_on_device:
                device_token_rows.append(len(token_ids))
                token_ids.append(0)
            else:
                token_ids.extend(token_slice(item.request, start, end))
            positions.extend(range(start, end))
            slots.extend(item.block_ids[p // block_size] * block_size + p % block_size for p in range(start, end))
            query_start.append(len(token_ids))
            context_lens.append(end)
            if item.samples:
                sample_rows.append(len(token_ids) - 1)
        width = max(len(item.block_ids) for item in scheduled)
        tables = [item.block_ids + [0] * (width - len(item.block_ids)) for item in scheduled]
        return cls(
            token_ids,
            positions,
            slots,
            query_start,
            context_lens,
            tables,
            sample_rows,
            is_decode_step(scheduled),
            device_token_rows,
        )

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def sample_index(self, device: torch.device) -> torch.Tensor:
        """sample_rows as an int64 index on `device`."""
        return to_device(self.sample_rows, torch.long, device)

    def metadata(self, slot_mapping: torch.Tensor, device: torch.device) -> AttentionMetadata:
        """The attention's view of the step; slot_mapping: the slots on the device (made or staged by the caller)."""
        num_seqs, width = len(self.context_lens), len(self.tables[0])
        flat_tables = [block for row in self.tables for block in row]
        ints = to_device(self.query_start + self.context_lens + flat_tables, torch.int32, device)
        return AttentionMetadata(
            slot_mapping=slot_mapping,
            query_start=ints[: num_seqs + 1],
            context_lens=ints[num_seqs + 1 : 2 * num_seqs + 1],
            block_tables=ints[2 * num_seqs + 1 :].view(num_seqs, width),
            query_start_cpu=self.query_start,
            context_lens_cpu=self.context_lens,
            max_context_len=max(self.context_lens),
            is_decode_only=self.is_decode_only,
        )


def to_device(values: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """values as one tensor on `device`: on CUDA through pinned memory, so the copy does not wait for the GPU
    to finish what it has queued (a copy from pageable memory synchronizes the stream first)."""
    host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


@dataclass
class StepInputs:
    """What the eager forward takes."""

    token_ids: torch.Tensor  # [num_tokens] int64
    positions: torch.Tensor  # [num_tokens] int64
    metadata: AttentionMetadata
    sample_rows: list[int]

    @classmethod
    def of(cls, layout: StepLayout, device: torch.device) -> StepInputs:
        num_tokens = layout.num_tokens
        longs = to_device(layout.token_ids + layout.positions + layout.slots, torch.long, device)
        token_ids, positions, slots = longs[:num_tokens], longs[num_tokens : 2 * num_tokens], longs[2 * num_tokens :]
        return cls(token_ids, positions, layout.metadata(slots, device), layout.sample_rows)


def is_decode_step(scheduled: list[ScheduledRequest]) -> bool:
    """One new token for every sequence (a decode, or a prefill's one-token last chunk: the same computation)."""
    return all(item.num_new_tokens == 1 for item in scheduled)


def decode_rows(scheduled: list[ScheduledRequest], block_size: int, known_tokens: bool = True):
    """The step's rows for the decode graphs; with known_tokens=False the token ids are placeholders (0) that
    the caller supplies on the device."""
    from modelgate.backends.llm.cuda_graphs import DecodeRows

    token_ids, positions, slots, tables = [], [], [], []
    for item in scheduled:
        request = item.request
        position = item.num_computed_tokens
        outputs = request.output_token_ids
        if not known_tokens:
            token_ids.append(0)
        elif outputs and position == request.num_prompt_tokens + len(outputs) - 1:
            token_ids.append(outputs[-1])  # the usual decode: the token sampled last step
        else:
            token_ids.append(token_slice(request, position, position + 1)[0])
        positions.append(position)
        block_ids = item.block_ids
        slots.append(block_ids[position // block_size] * block_size + position % block_size)
        tables.append(block_ids)
    return DecodeRows(token_ids, positions, slots, tables)


def token_slice(request, start: int, end: int) -> list[int]:
    """Tokens [start, end) of prompt + output without building the whole list for a decode."""
    num_prompt = request.num_prompt_tokens
    if start >= num_prompt:
        return request.output_token_ids[start - num_prompt : end - num_prompt]
    if end <= num_prompt:
        return request.prompt_token_ids[start:end]
    return request.prompt_token_ids[start:] + request.output_token_ids[: end - num_prompt]
