"""Our Llama-family decoder, loaded from a saved checkpoint, gives transformers' logits."""

import pytest
import torch

from modelgate.backends.llm.kv_cache_manager import KVCacheManager
from modelgate.backends.llm.model_runner import ModelRunner, RunnerConfig
from modelgate.backends.llm.models.model_config import DecoderConfig
from modelgate.backends.llm.request import LLMRequest
from modelgate.backends.llm.sampling_params import SamplingParams
from modelgate.backends.llm.scheduler import ScheduledRequest
from tests.backends.llm.hf_checkpoints import hf_model, save_random_checkpoint

CASES = [
    ("LlamaForCausalLM", {}),
    ("LlamaForCausalLM", {"tie_word_embeddings": True, "num_key_value_heads": 4}),
    ("LlamaForCausalLM", {"attention_bias": True, "mlp_bias": True}),
    (
        "LlamaForCausalLM",
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            }
        },
    ),
    ("LlamaForCausalLM", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    ("MistralForCausalLM", {"sliding_window": 8}),
    ("Qwen2ForCausalLM", {"tie_word_embeddings": True}),
]


def _runner(directory):
    config = DecoderConfig.from_file(directory / "config.json")
    return ModelRunner(
        directory, config, RunnerConfig(num_kv_blocks=32, block_size=4, max_model_len=256, show_progress=False)
    )


def _logits_all_positions(runner, request, kv, start, end):
    assert kv.allocate_slots(request, end - start)
    item = ScheduledRequest(request, start, end - start, kv.block_ids(request.request_id))
    inputs = runner._prepare([item])
    with torch.inference_mode():
        hidden = runner.model(inputs.token_ids, inputs.positions, runner.kv_caches, inputs.metadata)
        logits = runner.model.compute_logits(hidden)
    request.num_computed_tokens = end
    return logits


@pytest.mark.parametrize("architecture, overrides", CASES)
def test_prefill_and_paged_decode_logits_equal_transformers(tmp_path, architecture, overrides):
    directory = save_random_checkpoint(architecture, tmp_path, **overrides)
    tokens = torch.randint(0, 211, (1, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(directory)(tokens).logits[0]  # [23, vocab]
    runner = _runner(directory)
    kv = KVCacheManager(32, 4)
    request = LLMRequest("r", tokens[0].tolist(), SamplingParams())
    # A prefill in two chunks (the second over a cached prefix), then token-by-token decodes.
    first = _logits_all_positions(runner, request, kv, 0, 9)
    second = _logits_all_positions(runner, request, kv, 9, 17)
    decodes = [_logits_all_positions(runner, request, kv, p, p + 1) for p in range(17, 23)]
    ours = torch.cat([first, second, *decodes])
    torch.testing.assert_close(ours, expected, atol=2e-4, rtol=1e-4)


def test_batched_decode_path_matches_varlen_path(tmp_path):
    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path)
    runner = _runner(directory)
    kv = KVCacheManager(32, 4)
    requests = [LLMRequest(f"r{i}", list(range(3 + i, 10 + 2 * i)), SamplingParams()) for i in range(3)]
    for request in requests:
        _logits_all_positions(runner, request, kv, 0, request.num_prompt_tokens)
        request.output_token_ids.append(5)
    items = []
    for request in requests:
        assert kv.allocate_slots(request, 1)
        items.append(ScheduledRequest(request, request.num_computed_tokens, 1, kv.block_ids(request.request_id)))
    inputs = runner._prepare(items)
    assert inputs.metadata.is_decode_only
    with torch.inference_mode():
        batched = runner.model(inputs.token_ids, inputs.positions, runner.kv_caches, inputs.metadata)
        inputs.metadata.is_decode_only = False
        looped = runner.model(inputs.token_ids, inputs.positions, runner.kv_caches, inputs.metadata)
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)


def test_sharded_checkpoint_loads(tmp_path):
    import transformers

    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path / "one")
    model = hf_model(directory)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB", safe_serialization=True)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    a, b = _runner(directory), _runner(tmp_path / "sharded")
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(p, q, msg=name)
    assert transformers  # the sharded save above came from transformers itself
