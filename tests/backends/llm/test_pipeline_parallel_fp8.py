"""Pipeline parallelism keeps FP8: an FP8 checkpoint split into 2 stages (gloo, CPU) loads each stage's layers
as they are (rank 0 the first layer's FP8 weights and scales, not the second's; the LM head tied to the
embedding, which the last stage then holds too) and computes the single-process FP8 engine's logits and greedy
tokens. Unlike tensor parallelism nothing of a layer is split, so the quantization is the same per token.

The kernels run under the Triton interpreter without a GPU (the workers inherit TRITON_INTERPRET).
"""

import torch

from tests.backends.llm.triton_interpreter import interpret_kernels_without_cuda

interpret_kernels_without_cuda()

import pytest  # noqa: E402

from modelgate.backends.llm.layers.fp8_linear import Fp8Linear  # noqa: E402
from tests.backends.llm.test_fp8_engine import _save_fp8_checkpoint  # noqa: E402
from tests.backends.llm.test_pipeline_parallel import _engine  # noqa: E402
from tests.backends.llm.test_tensor_parallel import _first_step_logits, _generate, _prompts  # noqa: E402
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def fp8_checkpoint(tmp_path_factory):
    source = make_tiny_checkpoint(
        tmp_path_factory.mktemp("pp_fp8_source"), intermediate_size=128, tie_word_embeddings=True
    )
    return _save_fp8_checkpoint(source, tmp_path_factory.mktemp("pp_fp8") / "checkpoint")


def test_fp8_checkpoint_over_two_stages(fp8_checkpoint):
    directory, tensors = fp8_checkpoint
    engine = _engine(directory, max_num_batched_tokens=32)
    prompts = _prompts(engine, 4)
    expected_logits, expected_tokens = _first_step_logits(engine, prompts), _generate(engine, prompts)
    assert expected_logits.shape[0] >= 2

    engine = _engine(directory, pp=2, max_num_batched_tokens=32)
    try:
        (layer,) = engine.runner.model.layers  # 2 layers, 2 stages: rank 0 holds layer 0 only
        down = layer.mlp.down_proj
        assert isinstance(down, Fp8Linear) and isinstance(layer.self_attn.qkv_proj, Fp8Linear)
        stored = tensors["model.layers.0.mlp.down_proj.weight"]
        assert torch.equal(down.weight.data.view(torch.uint8), stored.view(torch.uint8))
        assert torch.equal(down.weight_scale.data, tensors["model.layers.0.mlp.down_proj.weight_scale"])

        torch.testing.assert_close(_first_step_logits(engine, prompts), expected_logits, rtol=1e-3, atol=1e-3)
        assert _generate(engine, prompts) == expected_tokens
    finally:
        engine.workers.stop()
