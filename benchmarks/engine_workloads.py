"""The requests an engine benchmark runs (llm_engine_vs_transformers.py and the scripts built on it): random
prompts of an ISL/OSL pattern, with or without a shared prefix, or the requests a `bench llm --save-prompts` file
holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


def prompts(num_requests: int, isl: int, vocab: int, prefix_len: int = 0) -> list[list[int]]:
    """Random ids in [3, vocab) (0-2 are BOS, EOS and UNK), the same for a given shape; the first prefix_len
    ids of every prompt are one shared draw, the rest each prompt's own."""
    if not 0 <= prefix_len < isl:
        raise ValueError(f"--prefix-len {prefix_len} must be below ISL {isl}: a prompt keeps ids of its own")
    generator = torch.Generator().manual_seed(1)
    batch = torch.randint(3, vocab, (num_requests, isl), generator=generator)
    if prefix_len:
        batch[:, :prefix_len] = torch.randint(3, vocab, (prefix_len,), generator=generator)
    return batch.tolist()


@dataclass
class Workload:
    """One pattern's requests: each prompt's ids and its output length."""

    label: str  # "ISL/OSL", or the prompts file's name
    prompts: list[list[int]]
    osls: list[int]

    def head(self, count: int) -> Workload:
        return Workload(self.label, self.prompts[:count], self.osls[:count])

    @property
    def longest(self) -> int:
        return max(len(prompt) + osl for prompt, osl in zip(self.prompts, self.osls))


def pattern_workload(pattern: str, num_requests: int, vocab: int, prefix_len: int = 0) -> Workload:
    isl, osl = (int(n) for n in pattern.split("/"))
    return Workload(f"{isl}/{osl}", prompts(num_requests, isl, vocab, prefix_len), [osl] * num_requests)


def file_workload(path: Path, vocab: int, num_requests: int | None = None) -> Workload:
    """The requests of a `bench llm --save-prompts` file (the first num_requests of them, if given)."""
    from modelgate.clients.bench.prompt_file import read_saved_prompts

    saved = read_saved_prompts(path)[:num_requests]
    largest = max(max(prompt.token_ids) for prompt in saved)
    if largest >= vocab:
        raise ValueError(f"{path}: token id {largest} is outside the checkpoint's vocabulary of {vocab}")
    return Workload(Path(path).name, [p.token_ids for p in saved], [p.osl for p in saved])
