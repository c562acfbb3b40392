"""Pipeline parallelism on the CPU (gloo, worker processes spawned for ranks 1..N-1): 2 stages, and 2 stages of
2 tensor-parallel ranks each (4 ranks), compute the single-process engine's logits and generate its greedy
tokens; steps of several sequences go through the stages as micro-batches; a stage rank dying fails the load
naming it; bad sizes are refused naming the field.

The checkpoints have 3 layers (2 stages split them 2 + 1: uneven on purpose) and biases on every projection.
The 2-stage one has an LM head of its own; the 4-rank one ties it to the embedding, so its last stage holds a
vocabulary-parallel copy of the embedding as its LM head. One process holds one parallel group at a time:
each engine is stopped before the next starts.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from modelgate.backends.llm.engine import LLMEngine
from modelgate.backends.llm.engine_client import EngineClient, EngineStartError
from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.parallel import state
from modelgate.backends.llm.parallel.stages import PipelineParallelError
from tests.backends.llm.process_tree import assert_start_fails_when_a_worker_rank_dies
from tests.backends.llm.test_tensor_parallel import _first_step_logits, _generate, _prompts
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint

BASE = dict(device="cpu", num_kv_blocks=64, block_size=4, max_model_len=128, show_progress=False)
# (tp, pp) -> the checkpoint's tie_word_embeddings and the engine's settings: 2 stages with chunked prefill and
# preemption (the longest prompt and its tokens need 11 of the 12 blocks; the first step prefills two prompts
# whole and a chunk of the third), 3 stages of one layer each (a middle stage: it receives and sends), 4 ranks.
CASES = {
    (1, 2): (False, {"max_num_batched_tokens": 24, "num_kv_blocks": 12}),
    (1, 3): (False, {}),
    (2, 2): (True, {}),
}
FIRST_STAGE_LAYERS = {2: 2, 3: 1}  # of 3: the earlier stages take the remainder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}
    for tied in (False, True):
        directory = tmp_path_factory.mktemp(f"pp_tied_{tied}")
        made[tied] = make_tiny_checkpoint(
            directory,
            vocab_size=301,
            num_hidden_layers=3,
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=tied,
        )
    return made


def _engine(checkpoint, tp=1, pp=1, **settings) -> LLMEngine:
    config = EngineConfig(**{**BASE, **settings}, tensor_parallel_size=tp, pipeline_parallel_size=pp)
    return LLMEngine(checkpoint, config)


@pytest.fixture(scope="module")
def single(checkpoints):
    """What the single-process engine computes, by case (before any parallel group exists here)."""
    results = {}
    for case, (tied, settings) in CASES.items():
        engine = _engine(checkpoints[tied], **settings)
        prompts = _prompts(engine, 6)
        logits = _first_step_logits(engine, prompts)
        assert logits.shape[0] >= 2  # a first step that samples several rows, else comparing it says nothing
        results[case] = prompts, logits, _generate(engine, prompts)
    return results


def _count_micro_batches(runner) -> dict[str, int]:
    """Counts, from now on, of rank 0's steps and of its stage model's forwards (one per micro-batch)."""
    counts = {"steps": 0, "micro_batches": 0}
    forward_step = runner.forward_step

    def counted_step(scheduled):
        counts["steps"] += 1
        return forward_step(scheduled)

    runner.forward_step = counted_step
    runner.model.register_forward_hook(lambda *_: counts.__setitem__("micro_batches", counts["micro_batches"] + 1))
    return counts


@pytest.mark.parametrize("case", list(CASES), ids=lambda case: f"tp{case[0]}-pp{case[1]}")
def test_pipeline_parallel_engine_equals_single_process(checkpoints, single, case):
    tp, pp = case
    tied, settings = CASES[case]
    prompts, logits, generated = single[case]
    engine = _engine(checkpoints[tied], tp, pp, **settings)
    try:
        model = engine.runner.model
        # Rank 0 is the first stage: its layers and their KV caches only, the embedding, no final norm.
        num_layers = FIRST_STAGE_LAYERS[pp]
        assert (len(model.layers), len(engine.runner.kv_caches)) == (num_layers, num_layers)
        assert model.embed_tokens is not None and model.norm is None
        torch.testing.assert_close(_first_step_logits(engine, prompts), logits, rtol=1e-4, atol=1e-4)
        counts = _count_micro_batches(engine.runner)
        assert _generate(engine, prompts) == generated
        # Steps of several sequences went through the stages as micro-batches (up to one per stage), not whole.
        assert counts["steps"] < counts["micro_batches"] <= pp * counts["steps"]
        assert engine.scheduler.num_preemptions > 0 or settings == {}
    finally:
        engine.workers.stop()
    assert state.current() is None


def test_a_stage_rank_dying_during_the_load_fails_it_naming_the_rank(checkpoints):
    """Rank 0 cannot be ready before rank 1 (the second stage) joins it: killing rank 1 fails the load."""
    config = EngineConfig(**{**BASE, "num_kv_blocks": 16}, pipeline_parallel_size=2)
    assert_start_fails_when_a_worker_rank_dies(checkpoints[False], config, r"rank 1 exited \(killed by signal 9\)")


def test_more_stages_than_layers_is_refused_naming_the_field(checkpoints):
    with pytest.raises(PipelineParallelError, match=r"pipeline_parallel_size 4 .*num_hidden_layers 3.*allowed: 1 to 3"):
        _engine(checkpoints[False], pp=4)
    assert state.current() is None  # refused before any rank started
    config = EngineConfig(**BASE, pipeline_parallel_size=4)
    with pytest.raises(EngineStartError, match=r"pipeline_parallel_size 4 cannot split this model"):
        EngineClient(checkpoints[False], config, on_outputs=lambda step: None, on_exit=lambda: None, start_timeout_s=60)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_pipeline_parallel_size_names_the_field(value):
    with pytest.raises(ValidationError, match="pipeline_parallel_size"):
        EngineConfig.model_validate({"pipeline_parallel_size": value})


@pytest.mark.parametrize(
    ("field", "value"),
    [("cuda_graph_max_batch_size", "16"), ("cuda_graph_max_num_tokens", "16")],
)
def test_settings_pipeline_stages_cannot_honour_are_refused(field, value):
    with pytest.raises(ValidationError, match=rf"not supported with pipeline_parallel_size 2: {field}: "):
        EngineConfig.model_validate({"pipeline_parallel_size": "2", field: value})
    EngineConfig.model_validate({"pipeline_parallel_size": "2", field: "0"})  # off: nothing to refuse
    EngineConfig.model_validate({"pipeline_parallel_size": "1", field: value})
