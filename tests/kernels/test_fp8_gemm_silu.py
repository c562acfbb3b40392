"""The gate | up GEMM with SiLU-and-mul in its epilogue (kernels/fp8_gemm_silu.py) gives the unfused path's bits:
fp8_linear with the config of twice its BLOCK_N, then silu_and_mul_fp8_split."""

import dataclasses

import pytest
import torch

from modelgate.kernels import fp8_gemm_cublas
from modelgate.kernels.fp8_gemm import fp8_linear
from modelgate.kernels.fp8_gemm_configs import Fp8GemmConfig, select_config, select_tma_config
from modelgate.kernels.fp8_gemm_silu import SiluFusionPlan, fp8_linear_silu, plan_silu_fusion, silu_fusion_config
from modelgate.kernels.fp8_gemm_tma import fp8_linear_tma
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


def unfused(x_fp8, x_scales, w_fp8, w_scales, plan: SiluFusionPlan, y_dtype=torch.bfloat16):
    """The GEMM (the plan's kernel, twice its BLOCK_N), then the split SiLU-and-mul kernels."""
    gemm = fp8_linear_tma if plan.tma else fp8_linear
    gemm_config = dataclasses.replace(plan.config, block_n=2 * plan.config.block_n)
    return silu_and_mul_fp8_split(gemm(x_fp8, x_scales, w_fp8, w_scales, out_dtype=y_dtype, config=gemm_config))


@pytest.mark.parametrize("tma", [False, True], ids=["cp_async", "tma"])
@pytest.mark.parametrize("M, inter, K", [(1, 16, 32), (20, 48, 96), (33, 40, 80)])
@pytest.mark.parametrize("y_dtype", [torch.bfloat16, torch.float16])
def test_equals_the_unfused_gemm_and_silu(M, inter, K, y_dtype, tma, dev):
    """Rows past a tile, columns past a tile (I = 40 over 16-wide tiles), K past a step (80 over 32; the TMA
    descriptor fills zeros there), through both kernels."""
    problem = make_problem(M, inter, K, dev)
    plan = SiluFusionPlan(SMALL, tma)
    values, scales = fp8_linear_silu(*problem, y_dtype=y_dtype, plan=plan)
    expected_values, expected_scales = unfused(*problem, plan, y_dtype)
    assert values.shape == (M, inter) and values.dtype == FP8_DTYPE and scales.shape == (M,)
    assert torch.equal(values.view(torch.uint8), expected_values.view(torch.uint8))
    assert torch.equal(scales, expected_scales)


def test_nonzero_and_bounded_outputs(dev):
    """A check that the comparison above compares something: the product is not all zeros and FP8-bounded."""
    values, scales = fp8_linear_silu(*make_problem(20, 48, 96, dev), plan=SiluFusionPlan(SMALL, False))
    assert values.float().abs().max() > 100 and values.float().abs().max() <= 448
    assert (scales > 0).all()


@pytest.mark.parametrize("M", [24, 300])
def test_default_plan_is_fp8_linears_kernel_and_config(M, dev):
    """Without a plan: the kernel and table config fp8_linear takes unfused for [2I, K] (TMA at decode sizes,
    where it runs), BLOCK_N halved; the same bits as fp8_linear by default followed by the SiLU kernels."""
    inter, K = 64, 128
    problem = make_problem(M, inter, K, dev, seed=1)
    plan = plan_silu_fusion(problem[0], problem[2])
    table = (select_tma_config if plan.tma else select_config)(M, 2 * inter, K, 132)
    assert plan.tma == (M <= 64) and plan.config == dataclasses.replace(table, block_n=table.block_n // 2)
    values, scales = fp8_linear_silu(*problem)
    expected_values, expected_scales = silu_and_mul_fp8_split(fp8_linear(*problem))
    assert torch.equal(values.view(torch.uint8), expected_values.view(torch.uint8))
    assert torch.equal(scales, expected_scales)


def test_no_fused_config_where_the_gemm_splits_k():
    """Llama 3 8B's gate_up splits nothing, but a long K at a few tokens does in fp8_gemm's own tiles."""
    for M in (2, 64):
        assert silu_fusion_config(M, 14336, 4096, 132, tma=True) is not None
    for M in (65, 256, 1024):
        assert silu_fusion_config(M, 14336, 4096, 132) is not None
    split = select_config(8, 2 * 512, 16384, 132)
    assert split.split_k > 1 and silu_fusion_config(8, 512, 16384, 132) is None


def test_empty_and_bad_arguments(dev):
    x_fp8, x_scales, w_fp8, w_scales = make_problem(3, 16, 32, dev)
    small = SiluFusionPlan(SMALL, False)
    values, scales = fp8_linear_silu(x_fp8[:0], x_scales[:0], w_fp8, w_scales, plan=small)
    assert values.shape == (0, 16) and scales.shape == (0,)
    with pytest.raises(ValueError, match="even number of rows"):
        fp8_linear_silu(x_fp8, x_scales, w_fp8[:31], w_scales[:31], plan=small)
    with pytest.raises(ValueError, match="split_k"):
        fp8_linear_silu(
            x_fp8, x_scales, w_fp8, w_scales, plan=small._replace(config=dataclasses.replace(SMALL, split_k=2))
        )
    with pytest.raises(ValueError, match="x_scales"):
        fp8_linear_silu(x_fp8, x_scales[:2], w_fp8, w_scales, plan=small)
    with pytest.raises(ValueError, match="TMA kernel needs"):
        strided = torch.empty(3, 64, dtype=x_fp8.dtype, device=dev)[:, :32]
        strided.copy_(x_fp8)
        fp8_linear_silu(strided, x_scales, w_fp8, w_scales, plan=SiluFusionPlan(SMALL, True))


@pytest.mark.gpu
@pytest.mark.parametrize("M", [2, 64, 65, 256, 1024])
def test_llama3_8b_gate_up_gpu(M, cuda, monkeypatch):
    """Llama 3 8B's MLP at decode (TMA), mixed-step, batch-256 and prefill sizes, the production plans (the
    unfused GEMM on the same Triton kernel: the engine's cuBLAS at prefill sizes would round differently)."""
    monkeypatch.setattr(fp8_gemm_cublas, "SCALED_MM_MIN_M", 0)
    inter, K = 14336, 4096
    problem = make_problem(M, inter, K, cuda, seed=M)
    values, scales = fp8_linear_silu(*problem)
    expected_values, expected_scales = silu_and_mul_fp8_split(fp8_linear(*problem))
    assert torch.equal(scales, expected_scales)
    assert torch.equal(values.view(torch.uint8), expected_values.view(torch.uint8))
