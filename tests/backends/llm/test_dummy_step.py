"""run_dummy_step, which warm-up and memory sizing run on a GPU: a forward over a throwaway cache, on the CPU
runner here, that leaves the engine's own KV cache as it was."""

from __future__ import annotations

import torch

from modelgate.backends.llm.dummy_step import run_dummy_step
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
        for num_tokens, num_sampled in ((1, 1), (5, 2), (17, 17)):
            run_dummy_step(engine.runner, num_tokens, num_sampled)
    assert all(torch.equal(cache, kept) for cache, kept in zip(caches, before))
