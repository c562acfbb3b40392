"""The GEMV that normalizes its own input (fp8_gemv(..., norm=InputNorm(...))) against rms_norm then the GEMV.

The fused path computes the same roundings as kernels/rms_norm.py (x + residual, x * rstd, * weight, each
rounded to x's dtype) and then the plain GEMV's sums. Only the mean square may be summed in another order, so
the tolerance is the GEMV's own (2 bf16 ULPs, or 1e-5 relative for fp32) against the unfused launches, and
the new residual must be the unfused one bit for bit. Under the interpreter both sums are numpy's over the
same contiguous row, and the outputs are equal.
"""

import pytest
import torch

from modelgate.kernels.fp8_gemv import InputNorm, fp8_gemv, split_k_counters
from modelgate.kernels.rms_norm import rms_norm
from tests.kernels.kernel_checks import assert_graph_replays_equal, poisoned_outputs, relative_error
from tests.kernels.test_fp8_gemv import SMALL_SPLIT, bf16_ulps, make_problem


def norm_problem(N, K, dev, dtype, seed):
    x, w_fp8, w_scales, _ = make_problem(N, K, dev, dtype, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    residual = torch.randn(1, K, generator=generator).to(dev, dtype)
    weight = (torch.rand(K, generator=generator) + 0.5).to(dev, dtype)
    return x, residual, weight, w_fp8, w_scales


def assert_close_to_unfused(out, unfused):
    assert out.shape == unfused.shape and out.dtype == unfused.dtype
    if out.device.type == "cpu":
        assert torch.equal(out, unfused)
    elif out.dtype == torch.bfloat16:
        assert bf16_ulps(out, unfused) <= 2
    else:
        assert relative_error(out, unfused) < 1e-5


@pytest.mark.parametrize("N, K", [(37, 300), (16, 161), (40, 1000)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("config", [SMALL_SPLIT, None], ids=["split", "unsplit"])
def test_matches_rms_norm_then_gemv(N, K, dtype, with_residual, config, dev):
    x, residual, weight, w_fp8, w_scales = norm_problem(N, K, dev, dtype, seed=N + K)
    config = config or SMALL_SPLIT._replace(block_n=16, block_k=512)
    residual = residual if with_residual else None
    new_residual = torch.full_like(x, float("nan")) if with_residual else None
    with poisoned_outputs():
        out = fp8_gemv(x, w_fp8, w_scales, config=config, norm=InputNorm(weight, 1e-5, residual, new_residual))
        normed, expected_residual = rms_norm(x, weight, 1e-5, None if residual is None else residual.clone())
        unfused = fp8_gemv(normed, w_fp8, w_scales, config=config)
    assert_close_to_unfused(out, unfused)
    if with_residual:
        assert torch.equal(new_residual, expected_residual)
        assert not torch.equal(residual, expected_residual), "the input residual is left as it was"
    assert not split_k_counters(out.device).any()


@pytest.mark.parametrize("config", [SMALL_SPLIT, None], ids=["split", "unsplit"])
def test_with_silu_and_mul(config, dev):
    inter, K = 19, 300
    x, residual, weight, w_fp8, w_scales = norm_problem(2 * inter, K, dev, torch.bfloat16, seed=3)
    config = config or SMALL_SPLIT._replace(block_n=16, block_k=512)
    new_residual = torch.empty_like(x)
    out = fp8_gemv(
        x, w_fp8, w_scales, config=config, silu_and_mul=True, norm=InputNorm(weight, 1e-6, residual, new_residual)
    )
    normed, _ = rms_norm(x, weight, 1e-6, residual.clone())
    assert_close_to_unfused(out, fp8_gemv(normed, w_fp8, w_scales, config=config, silu_and_mul=True))


def test_bad_norm_arguments(dev):
    x, residual, weight, w_fp8, w_scales = norm_problem(8, 64, dev, torch.bfloat16, seed=0)
    with pytest.raises(ValueError, match="norm.weight must be contiguous"):
        fp8_gemv(x, w_fp8, w_scales, norm=InputNorm(weight[:32], 1e-5))
    with pytest.raises(ValueError, match="norm.weight"):
        fp8_gemv(x, w_fp8, w_scales, norm=InputNorm(weight.float(), 1e-5))
    with pytest.raises(ValueError, match="new_residual goes with norm.residual"):
        fp8_gemv(x, w_fp8, w_scales, norm=InputNorm(weight, 1e-5, residual))
    with pytest.raises(ValueError, match="must not overlap"):
        fp8_gemv(x, w_fp8, w_scales, norm=InputNorm(weight, 1e-5, residual, residual))
    with pytest.raises(ValueError, match="norm.residual must be a contiguous"):
        fp8_gemv(x, w_fp8, w_scales, norm=InputNorm(weight, 1e-5, residual[:, :32], torch.empty_like(x)))
    x_fp8 = x.to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="normalized input must be"):
        fp8_gemv(x_fp8, w_fp8, w_scales, x_scale=torch.ones(1, device=dev), norm=InputNorm(weight, 1e-5))


@pytest.mark.gpu
@pytest.mark.parametrize("N, silu", [(6144, False), (28672, True)])  # qkv_proj, gate_up_proj of Llama 3 8B
def test_llama3_8b_norm_prologue_gpu(N, silu, cuda):
    """At the 8B sizes (K = 4096), eagerly and from a replayed CUDA graph, with PDL and the weight prefetch."""
    x, residual, weight, w_fp8, w_scales = norm_problem(N, 4096, cuda, torch.bfloat16, seed=7)
    new_residual = torch.empty_like(x)
    norm = InputNorm(weight, 1e-5, residual, new_residual)

    def fused():
        return fp8_gemv(x, w_fp8, w_scales, silu_and_mul=silu, norm=norm, prefetch_weights=True)

    out = fused()
    normed, expected_residual = rms_norm(x, weight, 1e-5, residual.clone())
    unfused = fp8_gemv(normed, w_fp8, w_scales, silu_and_mul=silu)
    assert bf16_ulps(out, unfused) <= 2
    assert torch.equal(new_residual, expected_residual)
    assert_graph_replays_equal(fused, out)
    assert not split_k_counters(cuda).any()
