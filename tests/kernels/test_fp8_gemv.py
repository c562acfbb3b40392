"""The single-token FP8-weight GEMV against its torch reference (fp32 sums: only summation order differs).

Tolerance: relative error < 1e-5 for fp32 x, and within 2 ULPs of the output dtype per element for bf16 output
(the reference rounds the same fp32 sum once).
"""

import pytest
import torch

from kernels.fp8_gemv import fp8_gemv, fp8_gemv_reference, plan_split_k
from kernels.fp8_quant import quantize_per_token_reference, quantize_weight_per_channel_reference
from tests.kernels.kernel_checks import poisoned_outputs, relative_error


def make_problem(N, K, dev, x_dtype=torch.bfloat16, bias=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, K, generator=generator).to(dev, x_dtype)
    w = torch.randn(N, K, generator=generator) * 0.05
    w_fp8, w_scales = quantize_weight_per_channel_reference(w.to(dev))
    b = torch.randn(N, generator=generator).to(dev, torch.bfloat16) if bias else None
    return x, w_fp8, w_scales, b


@pytest.mark.parametrize("N, K", [(37, 1000), (70, 3000), (5, 40)])  # 3000: K split in 2
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_matches_reference(N, K, x_dtype, dev):
    x, w_fp8, w_scales, b = make_problem(N, K, dev, x_dtype, bias=N % 2 == 1)
    with poisoned_outputs():
        out = fp8_gemv(x, w_fp8, w_scales, b)
    expected = fp8_gemv_reference(x, w_fp8, w_scales, b)
    assert out.shape == (1, N) and out.dtype == x_dtype
    if x_dtype == torch.float32:
        assert relative_error(out, expected) < 1e-5
    else:
        torch.testing.assert_close(out.float(), expected.float(), rtol=2**-7, atol=1e-3)


def test_fp8_activations_with_scale(dev):
    x, w_fp8, w_scales, b = make_problem(48, 1536, dev, torch.bfloat16, bias=True, seed=3)
    x_fp8, x_scale = quantize_per_token_reference(x)
    out = fp8_gemv(x_fp8, w_fp8, w_scales, b, x_scale=x_scale)
    expected = fp8_gemv_reference(x_fp8, w_fp8, w_scales, b, x_scale=x_scale)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.float(), rtol=2**-7, atol=1e-3)
    # and close to the unquantized activations' product (per-token FP8 of x costs ~2^-4 at most)
    assert relative_error(out, fp8_gemv_reference(x, w_fp8, w_scales, b)) < 2**-4


def test_split_plan():
    assert plan_split_k(6144, 4096, 132) == 2  # 384 row programs: 2 splits reach 4 per SM
    assert plan_split_k(28672, 4096, 132) == 1  # 1792 row programs are plenty
    assert plan_split_k(4096, 14336, 132) == 3
    assert plan_split_k(64, 512, 132) == 1  # too short to split


def test_bad_arguments(dev):
    x, w_fp8, w_scales, _ = make_problem(8, 64, dev)
    with pytest.raises(ValueError, match="x must be one contiguous row"):
        fp8_gemv(x.expand(2, 64), w_fp8, w_scales)
    with pytest.raises(ValueError, match="x_scale"):
        fp8_gemv(x, w_fp8, w_scales, x_scale=torch.ones(1, device=dev))
    with pytest.raises(ValueError, match="w_scales"):
        fp8_gemv(x, w_fp8, w_scales[:4])
    with pytest.raises(ValueError, match="w_fp8"):
        fp8_gemv(x, w_fp8.float(), w_scales)


@pytest.mark.gpu
@pytest.mark.parametrize("N, K", [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)])
def test_llama3_8b_shapes_gpu(N, K, cuda):
    x, w_fp8, w_scales, _ = make_problem(N, K, cuda)
    out = fp8_gemv(x, w_fp8, w_scales)
    expected = fp8_gemv_reference(x, w_fp8, w_scales)
    torch.testing.assert_close(out.float(), expected.float(), rtol=2**-7, atol=1e-3 * expected.float().abs().max().item())
    assert torch.equal(out, fp8_gemv(x, w_fp8, w_scales)), "two runs differ: the split sums are not ordered"
