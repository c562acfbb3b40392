"""The persistent TMA FP8 GEMM (kernels/fp8_gemm_tma_persistent.py) against fp8_linear's reference: programs
that walk several tiles (fewer programs than tiles), partial tiles in M, N and K, grouped order with a partial
group; the switch that sends fp8_linear there (off by default); on the GPU the Llama 3 8B projections."""

from unittest import mock

import pytest
import torch

from modelgate.kernels import fp8_gemm, fp8_gemm_tma_persistent
from modelgate.kernels.fp8_gemm import Fp8GemmConfig, fp8_linear, fp8_linear_reference
from modelgate.kernels.fp8_gemm_tma_persistent import launch_fp8_gemm_tma_persistent
from tests.kernels.kernel_checks import poisoned_outputs
from tests.kernels.test_fp8_gemm import (
    LLAMA3_8B,
    assert_matches_reference,
    assert_within_fast_accumulation,
    make_problem,
)

SMALL = Fp8GemmConfig(block_m=16, block_n=16, block_k=32, group_m=2, num_stages=2)


@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("programs", [1, 3, 64])
@pytest.mark.parametrize("M, N, K", [(5, 40, 96), (37, 24, 144), (48, 64, 64)])
def test_matches_reference(M, N, K, programs, flatten, dev, monkeypatch):
    monkeypatch.setattr(fp8_gemm_tma_persistent, "FLATTEN_TILE_LOOP", flatten)
    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(M, N, K, dev, bias=False)
    with poisoned_outputs():
        out = torch.empty((M, N), dtype=torch.bfloat16, device=dev)
        launch_fp8_gemm_tma_persistent(x_fp8, x_scales, w_fp8, w_scales, out, SMALL, num_programs=programs)
    assert_matches_reference(out, fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales))


def _spy():
    return mock.patch.object(fp8_gemm, "launch_fp8_gemm_tma_persistent", wraps=fp8_gemm.launch_fp8_gemm_tma_persistent)


def test_fp8_linear_takes_it_only_where_the_switch_is_set(dev, monkeypatch):
    _, _, b, x_fp8, x_scales, w_fp8, w_scales = make_problem(80, 40, 96, dev, bias=True)
    with _spy() as persistent:
        fp8_linear(x_fp8, x_scales, w_fp8, w_scales)  # off by default
    assert persistent.call_count == 0
    monkeypatch.setattr(fp8_gemm_tma_persistent, "PERSISTENT_MIN_M", 65)
    with _spy() as persistent:
        out = fp8_linear(x_fp8, x_scales, w_fp8, w_scales)
        fp8_linear(x_fp8[:64], x_scales[:64], w_fp8, w_scales)  # below PERSISTENT_MIN_M
        fp8_linear(x_fp8, x_scales, w_fp8, w_scales, bias=b)  # a bias: fp8_linear's own kernel
        fp8_linear(x_fp8, x_scales, w_fp8, w_scales, precise_accumulation=True)
    assert persistent.call_count == 1
    assert_matches_reference(out, fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales))


@pytest.mark.gpu
@pytest.mark.parametrize("layer", LLAMA3_8B)
@pytest.mark.parametrize("M", [300, 1024])
def test_llama3_8b_shapes_gpu(M, layer, cuda):
    N, K = LLAMA3_8B[layer]
    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(M, N, K, cuda, bias=False)
    out = launch_fp8_gemm_tma_persistent(
        x_fp8, x_scales, w_fp8, w_scales, torch.empty((M, N), device=cuda, dtype=torch.bfloat16)
    )
    ref = fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales)
    assert_within_fast_accumulation(out, ref, x_fp8, x_scales, w_fp8, w_scales)
