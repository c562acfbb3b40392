"""run_dummy_step, which warm-up and memory sizing run on a GPU: a forward over a throwaway cache, on the CPU
runner here, that leaves the engine's own KV cache as it was; and dummy_layout, the steps it lays out."""

from __future__ import annotations

import pytest
import torch

from modelgate.backends.llm.attention.fresh_prefill import sequence_runs
from modelgate.backends.llm.dummy_step import dummy_layout, run_dummy_step
from modelgate.backends.llm.engine import LLMEngine
from modelgate.backends.llm.engine_config import EngineConfig
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint


def test_dummy_steps_run_and_leave_the_kv_cache_untouched(tmp_path):
    engine = LLMEngine(
        make_tiny_checkpoint(tmp_path),
        EngineConfig(device="cpu", num_kv_blocks=16, block_size=4, max_model_len=64, show_progress=False),
    )
    caches = engine.runner.kv_caches
    for cache in caches:
        cache.fill_(0.5)
    before = [cache.clone() for cache in caches]
    with torch.inference_mode():
        for num_tokens, num_sampled, num_decodes in ((1, 1, 0), (5, 2, 0), (17, 17, 0), (9, 3, 2), (80, 4, 3)):
            run_dummy_step(engine.runner, num_tokens, num_sampled, num_decodes)
    assert all(torch.equal(cache, kept) for cache, kept in zip(caches, before))


def test_a_mixed_dummy_step_is_decodes_over_cached_keys_then_one_fresh_prefill():
    layout = dummy_layout(num_tokens=11, num_decodes=3, block_size=4, max_positions=6)
    assert layout.query_start == [0, 1, 2, 3, 11]
    assert layout.context_lens == [5, 5, 5, 8]
    runs = sequence_runs(layout.query_start, layout.context_lens)
    assert [(run.first, run.end, run.is_fresh) for run in runs] == [(0, 3, False), (3, 4, True)]
    assert layout.slots == [-1] * 11 and not layout.is_decode_only
    assert all(len(row) == 2 and set(row) == {0} for row in layout.tables)
    assert max(layout.positions) < 6 and len(layout.positions) == 11


def test_dummy_layouts_of_only_one_token_per_sequence_are_decodes():
    assert dummy_layout(1, 0, 16, 64).is_decode_only
    assert dummy_layout(4, 4, 16, 64).is_decode_only
    assert not dummy_layout(5, 3, 16, 64).is_decode_only
    with pytest.raises(ValueError, match="num_decodes"):
        dummy_layout(2, 3, 16, 64)
