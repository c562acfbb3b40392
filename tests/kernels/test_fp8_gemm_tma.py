"""The TMA-loaded FP8 GEMM (kernels/fp8_gemm_tma.py) against fp8_linear's reference: partial tiles in M, N
and K (the descriptor's zero fill), grouped tile order; on the GPU the Llama 3 8B projections."""

import pytest

from modelgate.kernels.fp8_gemm import Fp8GemmConfig, fp8_linear_reference
from modelgate.kernels.fp8_gemm_tma import fp8_linear_tma
from tests.kernels.kernel_checks import poisoned_outputs
from tests.kernels.test_fp8_gemm import (
    LLAMA3_8B,
    assert_matches_reference,
    assert_within_fast_accumulation,
    make_problem,
)

SMALL = Fp8GemmConfig(block_m=16, block_n=16, block_k=32, group_m=2, num_stages=2)
# K in 3 splits of 2 blocks (the last one partial at K = 144), summed by the reduce kernel.
SPLIT = Fp8GemmConfig(block_m=16, block_n=16, block_k=32, group_m=2, num_stages=2, split_k=3)


@pytest.mark.parametrize("config", [SMALL, SPLIT], ids=["one_split", "split_k"])
@pytest.mark.parametrize("M, N, K", [(1, 16, 32), (5, 40, 96), (33, 24, 144)])
def test_matches_reference(M, N, K, config, dev):
    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(M, N, K, dev, bias=False)
    with poisoned_outputs():
        out = fp8_linear_tma(x_fp8, x_scales, w_fp8, w_scales, config=config)
    assert_matches_reference(out, fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales))


def test_rejects_k_not_a_multiple_of_16(dev):
    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(3, 16, 40, dev, bias=False)
    with pytest.raises(ValueError, match="fp8_linear_tma: .*multiple of 16"):
        fp8_linear_tma(x_fp8, x_scales, w_fp8, w_scales, config=SMALL)


@pytest.mark.gpu
@pytest.mark.parametrize("layer", LLAMA3_8B)
@pytest.mark.parametrize("M", [64, 256])
def test_llama3_8b_shapes_gpu(M, layer, cuda):
    N, K = LLAMA3_8B[layer]
    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(M, N, K, cuda, bias=False)
    out = fp8_linear_tma(x_fp8, x_scales, w_fp8, w_scales)
    ref = fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales)
    assert_within_fast_accumulation(out, ref, x_fp8, x_scales, w_fp8, w_scales)
