"""The gate | up GEMM with SiLU-and-mul in its epilogue (kernels/fp8_gemm_silu.py) gives the unfused path's bits:
fp8_linear with the config of twice its BLOCK_N, then silu_and_mul_fp8_split."""

import dataclasses

import pytest
import torch

from modelgate.kernels.fp8_gemm import fp8_linear
from modelgate.kernels.fp8_gemm_configs import Fp8GemmConfig, select_config
from modelgate.kernels.fp8_gemm_silu import fp8_linear_silu, silu_fusion_config
from modelgate.kernels.fp8_quant import FP8_DTYPE, quantize_per_token
from modelgate.kernels.silu_and_mul_split import silu_and_mul_fp8_split

SMALL = Fp8GemmConfig(block_m=16, block_n=16, block_k=32, group_m=2, num_warps=4, num_stages=2)


def make_problem(M, inter, K, device, seed=0):
    """Per-token FP8 activations and a per-channel FP8 gate | up weight with spread-out channel scales."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=generator).to(device, torch.bfloat16)
    x_fp8, x_scales = quantize_per_token(x)
    w = torch.randn(2 * inter, K, generator=generator) * 0.1
    w_scales = (w.abs().amax(dim=1) / 448).clamp_min(1e-6)
    w_fp8 = (w / w_scales[:, None]).to(FP8_DTYPE)
    return x_fp8, x_scales, w_fp8.to(device), w_scales.to(device)


def unfused(x_fp8, x_scales, w_fp8, w_scales, config, y_dtype=torch.bfloat16):
    gemm_config = dataclasses.replace(config, block_n=2 * config.block_n)
    gate_up = fp8_linear(x_fp8, x_scales, w_fp8, w_scales, out_dtype=y_dtype, config=gemm_config)
    return silu_and_mul_fp8_split(gate_up)


@pytest.mark.parametrize("M, inter, K", [(1, 16, 32), (20, 48, 96), (33, 40, 80)])
@pytest.mark.parametrize("y_dtype", [torch.bfloat16, torch.float16])
def test_equals_the_unfused_gemm_and_silu(M, inter, K, y_dtype, dev):
    """Rows past a tile, columns past a tile (I = 40 over 16-wide tiles), K past a step (80 over 32)."""
    problem = make_problem(M, inter, K, dev)
    values, scales = fp8_linear_silu(*problem, y_dtype=y_dtype, config=SMALL)
    expected_values, expected_scales = unfused(*problem, SMALL, y_dtype)
    assert values.shape == (M, inter) and values.dtype == FP8_DTYPE and scales.shape == (M,)
    assert torch.equal(values.view(torch.uint8), expected_values.view(torch.uint8))
    assert torch.equal(scales, expected_scales)


def test_nonzero_and_bounded_outputs(dev):
    """A check that the comparison above compares something: the product is not all zeros and FP8-bounded."""
    values, scales = fp8_linear_silu(*make_problem(20, 48, 96, dev), config=SMALL)
    assert values.float().abs().max() > 100 and values.float().abs().max() <= 448
    assert (scales > 0).all()


def test_default_config_follows_the_gemm_table(dev):
    """Without a config: the table's choice for [2I, K], halved; the bits of the unfused path with that choice."""
    M, inter, K = 300, 64, 128
    config = silu_fusion_config(M, inter, K, 132)
    table = select_config(M, 2 * inter, K, 132)
    assert config == dataclasses.replace(table, block_n=table.block_n // 2)
    problem = make_problem(M, inter, K, dev, seed=1)
    values, scales = fp8_linear_silu(*problem)
    expected_values, expected_scales = unfused(*problem, config)
    assert torch.equal(values.view(torch.uint8), expected_values.view(torch.uint8))
    assert torch.equal(scales, expected_scales)


def test_no_fused_config_where_the_gemm_splits_k():
    """Llama 3 8B's gate_up at decode sizes splits nothing, but a long K at a few tokens does."""
    assert silu_fusion_config(256, 14336, 4096, 132) is not None
    assert silu_fusion_config(1024, 14336, 4096, 132) is not None
    split = select_config(8, 2 * 512, 16384, 132)
    assert split.split_k > 1 and silu_fusion_config(8, 512, 16384, 132) is None


def test_empty_and_bad_arguments(dev):
    x_fp8, x_scales, w_fp8, w_scales = make_problem(3, 16, 32, dev)
    values, scales = fp8_linear_silu(x_fp8[:0], x_scales[:0], w_fp8, w_scales, config=SMALL)
    assert values.shape == (0, 16) and scales.shape == (0,)
    with pytest.raises(ValueError, match="even number of rows"):
        fp8_linear_silu(x_fp8, x_scales, w_fp8[:31], w_scales[:31], config=SMALL)
    with pytest.raises(ValueError, match="split_k"):
        fp8_linear_silu(x_fp8, x_scales, w_fp8, w_scales, config=dataclasses.replace(SMALL, split_k=2))
    with pytest.raises(ValueError, match="x_scales"):
        fp8_linear_silu(x_fp8, x_scales[:2], w_fp8, w_scales, config=SMALL)


@pytest.mark.gpu
@pytest.mark.parametrize("M", [65, 256, 1024])
def test_llama3_8b_gate_up_gpu(M, cuda):
    """Llama 3 8B's MLP at mixed-step, batch-256 and prefill sizes, with the production configs."""
    inter, K = 14336, 4096
    problem = make_problem(M, inter, K, cuda, seed=M)
    config = silu_fusion_config(M, inter, K, torch.cuda.get_device_properties(cuda).multi_processor_count)
    values, scales = fp8_linear_silu(*problem)
    expected_values, expected_scales = unfused(*problem, config)
    assert torch.equal(scales, expected_scales)
    assert torch.equal(values.view(torch.uint8), expected_values.view(torch.uint8))
