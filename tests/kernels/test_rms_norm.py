"""Fused (residual add +) RMSNorm, plain and FP8 output, against its torch reference (norms.py's math).

Tolerances:
- the new residual (x + residual, one rounding to the input dtype) equals the reference bit for bit;
- the normalized rows are within two units in the last place of the output dtype (rtol 2^-6 bf16, 2^-9 fp16,
  1e-6 fp32): the kernel sums the squares in another order, which may move rstd by an fp32 ULP, and it
  rounds weight * normalized once where the reference rounds normalized first (the H100 saw 17 of 16M bf16
  elements 2 ULPs apart at 4096 x 4096);
- FP8 output: the fusion's contract is that values and scales are exactly quantize_per_token of the kernel's
  own normalized rows (bit for bit); against the reference's quantization they are within 1 e4m3 ULP
  (a one-unit change of the row amax moves the scale by at most 2^-7) and the scales within the output
  dtype's rtol.
"""

import pytest
import torch

import modelgate.kernels.rms_norm as rms_norm_module
from modelgate.kernels.fp8_quant import quantize_per_token_reference
from modelgate.kernels.rms_norm import rms_norm, rms_norm_reference
from tests.kernels.kernel_checks import assert_fp8_within_ulps, poisoned_outputs

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
RTOL = {torch.bfloat16: 2**-6, torch.float16: 2**-9, torch.float32: 1e-6}
EPS = 1e-5


def make_inputs(num_tokens, hidden, dtype, device, seed=0, row_stride=None):
    generator = torch.Generator().manual_seed(seed)
    width = row_stride or hidden
    # Rows of different magnitudes, so that rstd differs per row; strided rows are slices of wider rows.
    scales = torch.logspace(-1, 1, max(num_tokens, 1))[:num_tokens, None]
    x = (torch.randn(num_tokens, width, generator=generator) * scales).to(device, dtype)[:, :hidden]
    residual = torch.randn(num_tokens, width, generator=generator).to(device, dtype)[:, :hidden]
    weight = 1 + 0.1 * torch.randn(hidden, generator=generator)
    return x, residual, weight.to(device, dtype)


def check_normalized(out, expected):
    assert out.dtype == expected.dtype and out.shape == expected.shape and out.is_contiguous()
    rtol = RTOL[expected.dtype]
    torch.testing.assert_close(out.float(), expected.float(), rtol=rtol, atol=rtol * 1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", [1, 3, 7, 40])
@pytest.mark.parametrize("with_residual", [False, True])
def test_matches_reference(num_tokens, with_residual, dtype, dev):
    x, residual, weight = make_inputs(num_tokens, 72, dtype, dev)
    x_before = x.clone()
    expected = rms_norm_reference(x, weight, EPS, residual if with_residual else None)
    given = residual.clone() if with_residual else None
    with poisoned_outputs():
        out, new_residual = rms_norm(x, weight, EPS, given)
    check_normalized(out, expected.out)
    assert torch.equal(new_residual, expected.residual)
    assert torch.equal(x, x_before)  # x is only read
    # The contract: the residual passed in is updated in place and returned; without one, x is.
    assert new_residual is (given if with_residual else x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", [1, 7, 40])
def test_fp8_output_is_the_per_token_quantization(num_tokens, dtype, dev):
    x, residual, weight = make_inputs(num_tokens, 72, dtype, dev, seed=1)
    plain, _ = rms_norm(x, weight, EPS, residual.clone())
    with poisoned_outputs():
        (values, scales), new_residual = rms_norm(x, weight, EPS, residual.clone(), out_fp8=True)
    assert values.shape == (num_tokens, 72) and values.dtype == torch.float8_e4m3fn and values.is_contiguous()
    assert scales.shape == (num_tokens,) and scales.dtype == torch.float32
    own = quantize_per_token_reference(plain)
    assert torch.equal(values.view(torch.uint8), own.values.view(torch.uint8))
    assert torch.equal(scales, own.scales)
    expected = rms_norm_reference(x, weight, EPS, residual, out_fp8=True)
    assert torch.equal(new_residual, expected.residual)
    torch.testing.assert_close(scales, expected.out.scales, rtol=RTOL[dtype], atol=0)
    assert_fp8_within_ulps(values, expected.out.values, ulps=1)


def test_strided_rows_and_one_row_per_program(monkeypatch, dev):
    # Rows of x and residual are slices of wider rows (row stride 100 > hidden 72); TILE_ELEMENTS = 1 gives one
    # row per program, as at Llama sizes (hidden 4096).
    monkeypatch.setattr(rms_norm_module, "TILE_ELEMENTS", 1)
    x, residual, weight = make_inputs(5, 72, torch.bfloat16, dev, seed=2, row_stride=100)
    assert x.stride(0) == 100 and residual.stride(0) == 100
    expected = rms_norm_reference(x, weight, EPS, residual)
    out, new_residual = rms_norm(x, weight, EPS, residual)
    check_normalized(out, expected.out)
    assert torch.equal(new_residual, expected.residual) and new_residual.data_ptr() == residual.data_ptr()


def test_zero_rows(dev):
    x, residual, weight = make_inputs(0, 72, torch.bfloat16, dev)
    out, new_residual = rms_norm(x, weight, EPS, residual, out_fp8=True)
    assert out.values.shape == (0, 72) and out.scales.shape == (0,) and new_residual is residual


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda x, r, w: (x[None], r, w), "x"),
        (lambda x, r, w: (x.to(torch.int32), r, w), "x"),
        (lambda x, r, w: (x.t(), r.t(), w[:4]), "x"),  # column stride != 1
        (lambda x, r, w: (x, r, w[:-1]), "weight"),
        (lambda x, r, w: (x, r, w.float()), "weight"),
        (lambda x, r, w: (x, r[:-1], w), "residual"),
        (lambda x, r, w: (x, r.half(), w), "residual"),
    ],
)
def test_bad_arguments_name_the_field(change, field, dev):
    x, residual, weight = change(*make_inputs(4, 72, torch.bfloat16, dev))
    with pytest.raises(ValueError, match=rf"rms_norm: {field}\b"):
        rms_norm(x, weight, EPS, residual)


@pytest.mark.gpu
@pytest.mark.parametrize("num_tokens", [1, 64, 4096])
def test_llama_8b_shapes_on_gpu(num_tokens, cuda):
    """hidden 4096, bf16, with residual; plain and FP8 outputs."""
    x, residual, weight = make_inputs(num_tokens, 4096, torch.bfloat16, cuda, seed=3)
    expected = rms_norm_reference(x, weight, EPS, residual)
    out, new_residual = rms_norm(x, weight, EPS, residual.clone())
    check_normalized(out, expected.out)
    assert torch.equal(new_residual, expected.residual)
    (values, scales), _ = rms_norm(x, weight, EPS, residual.clone(), out_fp8=True)
    own = quantize_per_token_reference(out)
    assert torch.equal(values.view(torch.uint8), own.values.view(torch.uint8)) and torch.equal(scales, own.scales)
    expected_fp8 = rms_norm_reference(x, weight, EPS, residual, out_fp8=True).out
    assert_fp8_within_ulps(values, expected_fp8.values, ulps=1)
