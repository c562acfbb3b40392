"""benchmarks/llm_engine_vs_transformers.py's prompts: random ids as before by default, a shared prefix on
request, and a `bench llm --save-prompts` file replayed through the engine (and transformers) on the CPU."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.llm_engine_vs_transformers import file_workload, pattern_workload, prompts
from modelgate.clients.bench.llm_settings import PromptSettings
from modelgate.clients.bench.prompt_file import SavedPrompt, write_saved_prompts
from modelgate.clients.bench.prompts import PromptBuilder, PromptError
from tests.server_harness import EXAMPLE_REPOSITORY

ROOT = Path(__file__).resolve().parents[1]
TINY_LLM = EXAMPLE_REPOSITORY / "tiny_llm" / "1"  # a checkpoint with a real tokenizer (vocabulary 1024)


def test_default_prompts_are_the_seeded_draw_they_always_were():
    expected = torch.randint(3, 500, (4, 16), generator=torch.Generator().manual_seed(1)).tolist()
    assert prompts(4, 16, 500) == expected
    assert pattern_workload("16/5", 4, 500).prompts == expected


def test_a_shared_prefix_opens_every_prompt_and_the_rest_differs():
    batch = prompts(6, 20, 500, prefix_len=8)
    assert len({tuple(row[:8]) for row in batch}) == 1
    assert len({tuple(row[8:11]) for row in batch}) == 6
    assert all(3 <= i < 500 for row in batch for i in row)
    with pytest.raises(ValueError, match="--prefix-len 20 must be below ISL 20"):
        prompts(2, 20, 500, prefix_len=20)


def test_a_prompts_file_becomes_one_workload_checked_against_the_vocabulary(tmp_path):
    path = tmp_path / "sent.jsonl"
    write_saved_prompts(path, [SavedPrompt([1, 7, 8], 5), SavedPrompt([1, 9], 2), SavedPrompt([1, 4], 3)])
    workload = file_workload(path, vocab=10)
    assert (workload.label, workload.prompts, workload.osls) == ("sent.jsonl", [[1, 7, 8], [1, 9], [1, 4]], [5, 2, 3])
    assert workload.longest == 8 and file_workload(path, 10, num_requests=2).osls == [5, 2]
    with pytest.raises(ValueError, match="token id 9 is outside the checkpoint's vocabulary of 9"):
        file_workload(path, vocab=9)
    with pytest.raises(PromptError):
        file_workload(tmp_path / "missing.jsonl", vocab=10)


def test_saved_prompts_replay_through_the_engine_and_transformers(tmp_path):
    """Random-token prompts of tiny_llm's tokenizer, mixed lengths, replayed against tiny_llm's checkpoint."""
    builder = PromptBuilder(TINY_LLM, seed=2, settings=PromptSettings(prefix_len=4))
    lengths = [(12, 3), (20, 5), (12, 3), (9, 2)]
    saved = [SavedPrompt(builder.build(isl).token_ids, osl, i) for i, (isl, osl) in enumerate(lengths)]
    path = tmp_path / "sent.jsonl"
    write_saved_prompts(path, saved)
    command = [sys.executable, "benchmarks/llm_engine_vs_transformers.py", "--tiny", "--checkpoint", str(TINY_LLM)]
    result = subprocess.run(
        [*command, "--prompts-file", str(path)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"modelgate bf16 sent\.jsonl: .*\(13 tokens,", result.stdout)  # 3 + 5 + 3 + 2 outputs
    assert "transformers sent.jsonl:" in result.stdout and "(4 requests in batches of" in result.stdout
    assert "4 requests from" in result.stdout
    refused = subprocess.run(
        [*command, "--prompts-file", str(path), "--prefix-len", "4"], capture_output=True, text=True, cwd=ROOT
    )
    assert refused.returncode == 2 and "drop --patterns and --prefix-len" in refused.stderr
