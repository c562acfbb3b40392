"""Tensor parallelism on the CPU (gloo, worker processes spawned for ranks 1..N-1): 2 and 4 ranks compute the
single-process engine's logits and generate its greedy tokens; models that do not split are refused naming
the field; the step message and the checkpoint slices say what they should.

The checkpoint has biases on every projection (a row-parallel bias must be added once), a vocabulary of 301
(padded to 302 and 304: the padding must never win), 4 query and 2 KV heads (4 ranks replicate KV heads).
One process holds one tensor-parallel group at a time: each TP engine is stopped before the next starts.
"""

from __future__ import annotations

import pytest
import torch

from modelgate.backends.llm.engine import LLMEngine
from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.models.model_config import DecoderConfig
from modelgate.backends.llm.parallel import state
from modelgate.backends.llm.parallel.sharding import CheckpointSlice, Shard, TensorParallelError, check_splittable
from modelgate.backends.llm.parallel.step_channel import decode, encode
from modelgate.backends.llm.request import LLMRequest
from modelgate.backends.llm.sampling_params import SamplingParams
from modelgate.backends.llm.scheduler import ScheduledRequest
from modelgate.backends.llm.step_layout import token_slice
from tests.backends.llm.process_tree import assert_start_fails_when_a_worker_rank_dies
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint

GREEDY = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
WORDS = ["quick brown", "lazy dog", "stitch in time", "apple a day", "café naïve", "日本語"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tp")
    return make_tiny_checkpoint(directory, vocab_size=301, attention_bias=True, mlp_bias=True)


def _engine(checkpoint, tensor_parallel_size=1, **settings) -> LLMEngine:
    options = dict(device="cpu", num_kv_blocks=64, block_size=4, max_model_len=128, show_progress=False)
    options.update(settings)
    return LLMEngine(checkpoint, EngineConfig(tensor_parallel_size=tensor_parallel_size, **options))


def _prompts(engine, count: int) -> list[list[int]]:
    return [
        engine.tokenizer.encode(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 4))) for i in range(count)
    ]


def _first_step_logits(engine, prompts) -> torch.Tensor:
    """The logits of one step prefilling every prompt (what rank 0 samples from)."""
    for i, prompt in enumerate(prompts):
        engine.add_request(f"l{i}", prompt, GREEDY)
    scheduled = engine.scheduler.schedule().scheduled
    engine.runner.shard.send_step(scheduled)
    logits = engine.runner.forward_step(scheduled)
    for i in range(len(prompts)):
        engine.abort(f"l{i}")
    return logits


def _generate(engine, prompts) -> dict[str, list[int]]:
    """Every prompt at once, greedy, to the end: {request id: tokens}."""
    for i, prompt in enumerate(prompts):
        engine.add_request(f"g{i}", prompt, GREEDY)
    tokens: dict[str, list[int]] = {}
    while engine.has_unfinished:
        for output in engine.step():
            tokens.setdefault(output.request_id, []).extend(output.new_token_ids)
    return tokens


# Each world size runs one engine (a start costs seconds): 4 ranks the defaults, 2 ranks chunked prefill and
# preemption (the longest prompt and its tokens need 11 of the 12 blocks). The budget of 24 tokens still ends
# two prompts' prefills in the first step: its logits have rows to compare.
SETTINGS = {4: {}, 2: {"max_num_batched_tokens": 24, "num_kv_blocks": 12}}


@pytest.fixture(scope="module")
def single(checkpoint):
    """What the single-process engine computes, by world size (before any tensor-parallel group exists here)."""
    results = {}
    for world_size, settings in SETTINGS.items():
        engine = _engine(checkpoint, **settings)
        prompts = _prompts(engine, 6)
        logits = _first_step_logits(engine, prompts)
        assert logits.shape[0] >= 2  # a first step that samples several rows, else comparing it says nothing
        results[world_size] = prompts, logits, _generate(engine, prompts)
    return results


@pytest.mark.parametrize("world_size", [2, 4])
def test_tensor_parallel_engine_equals_single_process(checkpoint, single, world_size):
    prompts, logits, generated = single[world_size]
    engine = _engine(checkpoint, world_size, **SETTINGS[world_size])
    try:
        assert engine.runner.model.layers[0].self_attn.num_kv_heads == max(1, 2 // world_size)
        torch.testing.assert_close(_first_step_logits(engine, prompts), logits, rtol=1e-4, atol=1e-4)
        assert _generate(engine, prompts) == generated
        assert engine.scheduler.num_preemptions > 0 or world_size == 4
    finally:
        engine.workers.stop()
    assert state.current() is None


def test_a_rank_dying_during_the_load_fails_it_naming_the_rank(checkpoint):
    """Rank 0 cannot be ready before rank 1 joins it: killing rank 1 as soon as it exists fails the load."""
    config = EngineConfig(
        device="cpu", num_kv_blocks=16, block_size=4, max_model_len=64, show_progress=False, tensor_parallel_size=2
    )
    assert_start_fails_when_a_worker_rank_dies(
        checkpoint, config, r"tensor parallelism: rank 1 exited \(killed by signal 9\)"
    )


def test_a_model_that_does_not_split_is_refused(checkpoint):
    with pytest.raises(TensorParallelError, match=r"num_attention_heads 4 is not divisible.*allowed: 1, 2, 4"):
        _engine(checkpoint, 3)
    assert state.current() is None


def _config(**fields) -> DecoderConfig:
    base = dict(
        architecture="LlamaForCausalLM",
        vocab_size=10,
        hidden_size=64,
        intermediate_size=96,
        num_layers=1,
        num_heads=8,
        num_kv_heads=2,
        head_dim=8,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
    )
    return DecoderConfig(**{**base, **fields})


def test_splitting_rules_name_the_field():
    check_splittable(_config(), 8)  # KV heads replicated: 8 ranks, 2 KV heads
    with pytest.raises(TensorParallelError, match="intermediate_size 96 is not divisible"):
        check_splittable(_config(intermediate_size=96), 64)
    with pytest.raises(TensorParallelError, match="num_key_value_heads 3 is neither divisible"):
        check_splittable(_config(num_heads=12, num_kv_heads=3), 4)


def test_each_rank_reads_its_slices():
    config = _config(vocab_size=10)
    rank = Shard(config, 3, 4)  # 2 query heads, the second KV head's copy, vocabulary rows 9..11 (9 real)
    assert rank.checkpoint_slice("layers.0.self_attn.qkv_proj.weight#0", (64, 64)) == CheckpointSlice(0, 48, 16)
    assert rank.checkpoint_slice("layers.0.self_attn.qkv_proj.weight#2", (16, 64)) == CheckpointSlice(0, 8, 8)
    assert rank.checkpoint_slice("layers.0.self_attn.qkv_proj.weight_scale#1", (16,)) == CheckpointSlice(0, 8, 8)
    assert rank.checkpoint_slice("layers.0.self_attn.qkv_proj.weight_scale#1", ()) is None  # per-tensor
    assert rank.checkpoint_slice("layers.0.self_attn.o_proj.weight", (64, 64)) == CheckpointSlice(1, 48, 16)
    assert rank.checkpoint_slice("layers.0.self_attn.o_proj.weight_scale", (64,)) is None
    assert rank.checkpoint_slice("layers.0.mlp.down_proj.bias", (64,)) is None
    assert rank.checkpoint_slice("layers.0.mlp.gate_up_proj.weight#1", (96, 64)) == CheckpointSlice(0, 72, 24)
    assert rank.checkpoint_slice("embed_tokens.weight", (10, 64)) == CheckpointSlice(0, 9, 1)
    assert rank.checkpoint_slice("layers.0.input_layernorm.weight", (64,)) is None
    local = rank.local_config()
    assert (local.num_heads, local.num_kv_heads, local.intermediate_size, local.vocab_size) == (2, 1, 24, 3)


def test_the_step_message_carries_what_the_runner_reads():
    prefill = LLMRequest("a", list(range(10, 20)), GREEDY)
    decoding = LLMRequest("b", [1, 2, 3], GREEDY)
    decoding.output_token_ids.extend([7, 8])
    scheduled = [ScheduledRequest(prefill, 4, 3, [5, 6]), ScheduledRequest(decoding, 4, 1, [9, 2])]
    for sent, got in zip(scheduled, decode(encode(scheduled))):
        start, end = sent.num_computed_tokens, sent.num_computed_tokens + sent.num_new_tokens
        assert token_slice(got.request, start, end) == token_slice(sent.request, start, end)
        assert (got.num_computed_tokens, got.num_new_tokens, got.block_ids, got.samples) == (
            sent.num_computed_tokens,
            sent.num_new_tokens,
            sent.block_ids,
            sent.samples,
        )
    assert [item.samples for item in scheduled] == [False, True]
