"""How ranks, layers and a step's sequences divide under pipeline parallelism (no processes: plain functions)."""

from __future__ import annotations

import pytest

from modelgate.backends.llm.models.model_config import DecoderConfig
from modelgate.backends.llm.parallel.layout import ParallelLayout
from modelgate.backends.llm.parallel.micro_batches import split_micro_batches
from modelgate.backends.llm.parallel.stages import PipelineParallelError, StageLayers, check_stages
from modelgate.backends.llm.request import LLMRequest
from modelgate.backends.llm.sampling_params import SamplingParams
from modelgate.backends.llm.scheduler import ScheduledRequest


def _config(num_layers: int, tied: bool = False) -> DecoderConfig:
    return DecoderConfig(
        architecture="LlamaForCausalLM",
        vocab_size=10,
        hidden_size=8,
        intermediate_size=16,
        num_layers=num_layers,
        num_heads=2,
        num_kv_heads=1,
        head_dim=4,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=tied,
    )


def test_ranks_are_stage_major_with_tensor_parallel_ranks_consecutive():
    layout = ParallelLayout(tensor_parallel_size=2, pipeline_parallel_size=3)
    assert layout.world_size == 6
    assert [(layout.stage_of(r), layout.tp_rank_of(r)) for r in range(6)] == [
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)
    ]  # fmt: skip
    assert layout.stage_ranks(1) == [2, 3]
    assert layout.logits_rank == 4


@pytest.mark.parametrize(
    ("num_layers", "num_stages", "ranges"),
    [(80, 4, [(0, 20), (20, 40), (40, 60), (60, 80)]), (3, 2, [(0, 2), (2, 3)]), (7, 3, [(0, 3), (3, 5), (5, 7)])],
)
def test_stages_take_contiguous_layers_the_earlier_ones_the_remainder(num_layers, num_stages, ranges):
    stages = [StageLayers(_config(num_layers), s, num_stages) for s in range(num_stages)]
    assert [(stage.start, stage.end) for stage in stages] == ranges
    assert [stage.local_config(stage.full).num_layers for stage in stages] == [end - start for start, end in ranges]


def test_each_stage_reads_its_layers_and_ends_of_the_checkpoint():
    first, middle, last = (StageLayers(_config(6), s, 3) for s in range(3))
    assert first.checkpoint_key("layers.1.self_attn.qkv_proj.weight#0") == "layers.1.self_attn.qkv_proj.weight#0"
    assert first.checkpoint_key("layers.2.mlp.down_proj.weight") is None
    assert middle.checkpoint_key("layers.3.mlp.down_proj.weight") == "layers.1.mlp.down_proj.weight"
    assert last.checkpoint_key("layers.5.input_layernorm.weight") == "layers.1.input_layernorm.weight"
    ends = ["embed_tokens.weight", "norm.weight", "lm_head_weight"]
    assert [first.checkpoint_key(k) for k in ends] == ["embed_tokens.weight", None, None]
    assert [middle.checkpoint_key(k) for k in ends] == [None, None, None]
    assert [last.checkpoint_key(k) for k in ends] == [None, "norm.weight", "lm_head_weight"]
    tied_last = StageLayers(_config(6, tied=True), 2, 3)  # the LM head is the embedding: the last stage reads it
    assert tied_last.checkpoint_key("embed_tokens.weight") == "embed_tokens.weight"


def test_more_stages_than_layers_is_refused():
    check_stages(_config(3), 3)
    with pytest.raises(PipelineParallelError, match=r"pipeline_parallel_size 4 .* allowed: 1 to 3"):
        check_stages(_config(3), 4)


def _step(new_tokens: list[int]) -> list[ScheduledRequest]:
    params = SamplingParams(max_tokens=4, temperature=0)
    requests = [LLMRequest(f"r{i}", list(range(1, n + 1)), params) for i, n in enumerate(new_tokens)]
    return [ScheduledRequest(request, 0, n, [i]) for i, (request, n) in enumerate(zip(requests, new_tokens))]


@pytest.mark.parametrize(
    ("new_tokens", "num_stages", "sizes"),
    [
        ([1, 1, 1, 1], 2, [2, 2]),  # a decode: even counts
        ([500] + [1] * 30, 2, [1, 30]),  # a long prefill chunk against decodes: even work, not even counts
        ([1, 1, 1, 1], 3, [2, 1, 1]),
        ([10, 1, 1], 3, [1, 1, 1]),  # never an empty micro-batch
        ([3, 3], 4, [1, 1]),  # fewer sequences than stages: one each
        ([7], 2, [1]),  # one sequence is never split
    ],
)
def test_micro_batches_are_contiguous_runs_of_about_equal_tokens(new_tokens, num_stages, sizes):
    scheduled = _step(new_tokens)
    batches = split_micro_batches(scheduled, num_stages)
    assert [len(batch) for batch in batches] == sizes
    assert [item for batch in batches for item in batch] == scheduled  # the order the sampler expects
