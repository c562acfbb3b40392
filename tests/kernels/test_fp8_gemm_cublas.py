"""The cuBLAS switch of fp8_linear (kernels/fp8_gemm_cublas.py): which GEMMs it takes (from 257 rows by default);
on the GPU, that those come back from torch._scaled_mm within fast accumulation of the reference."""

from unittest import mock

import pytest
import torch

from modelgate.kernels import fp8_gemm, fp8_gemm_cublas
from modelgate.kernels.fp8_gemm import fp8_linear, fp8_linear_reference
from modelgate.kernels.fp8_gemm_cublas import scaled_mm_operands_fit, takes_scaled_mm
from tests.kernels.test_fp8_gemm import (
    LLAMA3_8B,
    assert_matches_reference,
    assert_within_fast_accumulation,
    make_problem,
)

FITS = dict(M=300, N=4096, K=4096, bias=False, out_dtype=torch.bfloat16, precise_accumulation=False, contiguous=True)


def test_prefill_sizes_by_default():
    assert fp8_gemm_cublas.SCALED_MM_MIN_M == 257
    assert scaled_mm_operands_fit(**FITS)
    assert not scaled_mm_operands_fit(**{**FITS, "M": 256})


def test_switched_off_takes_nothing(monkeypatch):
    monkeypatch.setattr(fp8_gemm_cublas, "SCALED_MM_MIN_M", 0)
    assert not scaled_mm_operands_fit(**FITS)


@pytest.mark.parametrize(
    "M, N, K, taken", [(2047, 4096, 14336, True), (2048, 4096, 14336, False), (4096, 6144, 4096, True)]
)
def test_long_k_gemms_stay_on_the_triton_tiles_at_large_m(M, N, K, taken):
    """A down projection (K >= 3 N) from LONG_K_OURS_MIN_M rows keeps the Triton kernel; qkv-shaped ones do not."""
    assert fp8_gemm_cublas.LONG_K_OURS_MIN_M == 2048
    assert scaled_mm_operands_fit(**{**FITS, "M": M, "N": N, "K": K}) == taken


@pytest.mark.parametrize(
    "change",
    [{}, {"M": 256}, {"bias": True}, {"out_dtype": torch.float16}, {"precise_accumulation": True}, {"K": 4104}]
    + [{"N": 40}, {"contiguous": False}],
    ids=["fits", "below_min_m", "bias", "fp16_out", "precise", "k_not_16", "n_not_16", "strided"],
)
def test_which_gemms_the_switch_takes(change, monkeypatch):
    monkeypatch.setattr(fp8_gemm_cublas, "SCALED_MM_MIN_M", 257)
    assert scaled_mm_operands_fit(**{**FITS, **change}) == (not change)


def test_cpu_tensors_stay_off_cublas(monkeypatch):
    monkeypatch.setattr(fp8_gemm_cublas, "SCALED_MM_MIN_M", 1)
    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(40, 32, 64, torch.device("cpu"), bias=False)
    assert not takes_scaled_mm(x_fp8, x_scales, w_fp8, None, torch.bfloat16, False)


def test_switched_off_fp8_linear_keeps_its_kernel_at_prefill_sizes(dev, monkeypatch):
    monkeypatch.setattr(fp8_gemm_cublas, "SCALED_MM_MIN_M", 0)
    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(300, 32, 64, dev, bias=False)
    with mock.patch.object(fp8_gemm, "fp8_linear_scaled_mm") as cublas:
        out = fp8_linear(x_fp8, x_scales, w_fp8, w_scales)
    assert cublas.call_count == 0
    assert_matches_reference(out, fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales))


@pytest.mark.gpu
@pytest.mark.parametrize("layer", LLAMA3_8B)
def test_prefill_sizes_through_cublas_gpu(layer, cuda, monkeypatch):
    monkeypatch.setattr(fp8_gemm_cublas, "SCALED_MM_MIN_M", 257)
    N, K = LLAMA3_8B[layer]
    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(300, N, K, cuda, bias=False)
    with mock.patch.object(fp8_gemm, "fp8_linear_scaled_mm", wraps=fp8_gemm.fp8_linear_scaled_mm) as cublas:
        out = fp8_linear(x_fp8, x_scales, w_fp8, w_scales)
        fp8_linear(x_fp8[:256], x_scales[:256], w_fp8, w_scales)  # below SCALED_MM_MIN_M: the Triton kernel
    assert cublas.call_count == 1
    assert out.dtype == torch.bfloat16 and out.shape == (300, N)
    ref = fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales)
    assert_within_fast_accumulation(out, ref, x_fp8, x_scales, w_fp8, w_scales)
