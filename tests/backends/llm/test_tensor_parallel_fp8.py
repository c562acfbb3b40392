"""Tensor parallelism keeps FP8: an FP8 checkpoint split over 2 ranks (gloo, CPU) loads each rank's slices as
they are (column-parallel weights with their per-channel scales split, row-parallel ones with their scales
whole; the LM head tied to the embedding) and computes the single-process FP8 engine's logits and greedy tokens.

Not bit-equal: a row-parallel Fp8Linear quantizes its input per token over its rank's columns only (a finer
scale than over the whole row), so logits agree closely rather than exactly. The kernels run under the Triton
interpreter without a GPU (the workers inherit TRITON_INTERPRET): triton_interpreter.py.
"""

import torch

from tests.backends.llm.triton_interpreter import interpret_kernels_without_cuda

interpret_kernels_without_cuda()

import pytest  # noqa: E402

from modelgate.backends.llm.layers.fp8_linear import Fp8Linear  # noqa: E402
from tests.backends.llm.test_fp8_engine import _save_fp8_checkpoint  # noqa: E402
from tests.backends.llm.test_tensor_parallel import _engine, _first_step_logits, _generate, _prompts  # noqa: E402
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def fp8_checkpoint(tmp_path_factory):
    # Tied embeddings here (the unquantized tests have an LM head of its own): each rank's LM head is then its
    # vocabulary slice of the embedding.
    source = make_tiny_checkpoint(
        tmp_path_factory.mktemp("tp_fp8_source"), intermediate_size=128, tie_word_embeddings=True
    )
    directory, tensors = _save_fp8_checkpoint(source, tmp_path_factory.mktemp("tp_fp8") / "checkpoint")
    return directory, tensors


def test_fp8_checkpoint_over_two_ranks(fp8_checkpoint):
    directory, tensors = fp8_checkpoint
    engine = _engine(directory, 1, max_num_batched_tokens=16)
    prompts = _prompts(engine, 4)
    expected_logits, expected_tokens = _first_step_logits(engine, prompts), _generate(engine, prompts)

    engine = _engine(directory, 2, max_num_batched_tokens=16)
    try:
        assert engine.runner.model.config.tie_word_embeddings
        attention, mlp = engine.runner.model.layers[1].self_attn, engine.runner.model.layers[1].mlp
        assert isinstance(attention.qkv_proj, Fp8Linear) and isinstance(mlp.down_proj, Fp8Linear)
        k_weight = tensors["model.layers.1.self_attn.k_proj.weight"]  # 2 KV heads of 16: rank 0 has the first
        k_rows = attention.qkv_proj.part_slice(1)
        assert torch.equal(attention.qkv_proj.weight.data[k_rows].view(torch.uint8), k_weight[:16].view(torch.uint8))
        k_scale = tensors["model.layers.1.self_attn.k_proj.weight_scale"]  # per channel: split with the rows
        assert torch.equal(attention.qkv_proj.weight_scale.data[k_rows], k_scale[:16].reshape(-1))
        down = tensors["model.layers.1.mlp.down_proj.weight"]  # row-parallel: rank 0's columns, every scale
        assert torch.equal(mlp.down_proj.weight.data.view(torch.uint8), down[:, :64].view(torch.uint8))
        assert torch.equal(mlp.down_proj.weight_scale.data, tensors["model.layers.1.mlp.down_proj.weight_scale"])

        logits = _first_step_logits(engine, prompts)
        relative = (logits - expected_logits).norm() / expected_logits.norm()
        assert relative < 0.05  # FP8 against unquantized: ~0.05-0.1 (test_fp8_engine.py)
        assert (logits.argmax(-1) == expected_logits.argmax(-1)).all()
        tokens = _generate(engine, prompts)
        assert sum(tokens[r][:3] == expected_tokens[r][:3] for r in tokens) >= len(tokens) - 1
    finally:
        engine.workers.stop()
