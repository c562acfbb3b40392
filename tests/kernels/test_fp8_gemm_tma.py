"""The TMA-loaded FP8 GEMM (kernels/fp8_gemm_tma.py) against fp8_linear's reference: partial tiles in M, N
and K (the descriptor's zero fill), grouped tile order; which calls of fp8_linear it takes and with which tiles;
on the GPU the Llama 3 8B projections."""

from unittest import mock

import pytest
import torch

from modelgate.kernels import fp8_gemm, fp8_gemm_tma
from modelgate.kernels.fp8_gemm import Fp8GemmConfig, fp8_linear, fp8_linear_reference
from modelgate.kernels.fp8_gemm_configs import select_config, select_tma_config
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


def test_select_tma_config_narrows_tiles_while_one_wave_holds_them():
    # H100 (132 SMs), M = 64 (benchmarks/fp8_gemm_tma.py --sweep): o and down in 128 tiles 32 wide, 6 stages;
    # qkv (192 such tiles) 64 wide in 4 stages; gate_up (448 64-wide tiles) in 3 stages, two programs per SM.
    assert select_tma_config(64, 4096, 4096) == Fp8GemmConfig(64, 32, 256, 1, 1, 4, 6)
    assert select_tma_config(64, 4096, 14336) == Fp8GemmConfig(64, 32, 256, 1, 1, 4, 6)  # no split-K
    assert select_tma_config(64, 6144, 4096) == Fp8GemmConfig(64, 64, 256, 1, 1, 4, 4)
    assert select_tma_config(64, 28672, 4096) == Fp8GemmConfig(64, 64, 256, 1, 1, 4, 3)
    assert select_tma_config(9, 4096, 4096).block_m == 16 and select_tma_config(40, 96, 48).block_k == 64
    assert select_tma_config(65, 6144, 4096) == select_config(65, 6144, 4096)


def _spy(module, name):
    return mock.patch.object(module, name, wraps=getattr(module, name))


@pytest.mark.parametrize("M", [1, 40])
def test_fp8_linear_sends_decode_sizes_to_the_tma_kernel(M, dev):
    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(M, 40, 96, dev, bias=False)
    with _spy(fp8_gemm, "launch_fp8_gemm_tma") as tma, _spy(fp8_gemm._fp8_gemm_kernel, "run") as own:
        out = fp8_linear(x_fp8, x_scales, w_fp8, w_scales)
    assert tma.call_count == 1 and own.call_count == 0
    assert torch.equal(out, fp8_linear_tma(x_fp8, x_scales, w_fp8, w_scales))
    assert_matches_reference(out, fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales))


@pytest.mark.parametrize("case", ["bias", "config", "precise", "m_65", "k_40", "strided_x", "no_tma"])
def test_fp8_linear_keeps_its_own_kernel_where_tma_does_not_apply(case, dev, monkeypatch):
    M, K = (65 if case == "m_65" else 8), (40 if case == "k_40" else 96)
    _, _, b, x_fp8, x_scales, w_fp8, w_scales = make_problem(M, 40, K, dev, bias=case == "bias")
    if case == "strided_x":  # rows of a wider buffer: unit column stride, row stride 2K
        wide = torch.zeros((M, 2 * K), dtype=x_fp8.dtype, device=x_fp8.device)
        wide[:, :K] = x_fp8
        x_fp8 = wide[:, :K]
    if case == "no_tma":
        monkeypatch.setattr(fp8_gemm_tma, "TensorDescriptor", None)
    options = {
        "bias": {"bias": b},
        "config": {"config": select_config(M, 40, K)},
        "precise": {"precise_accumulation": True},
    }.get(case, {})
    with _spy(fp8_gemm, "launch_fp8_gemm_tma") as tma, _spy(fp8_gemm._fp8_gemm_kernel, "run") as own:
        out = fp8_linear(x_fp8, x_scales, w_fp8, w_scales, **options)
    assert tma.call_count == 0 and own.call_count == 1
    assert_matches_reference(out, fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales, options.get("bias")))


@pytest.mark.gpu
@pytest.mark.parametrize("layer", LLAMA3_8B)
@pytest.mark.parametrize("M", [64, 256])
def test_llama3_8b_shapes_gpu(M, layer, cuda):
    N, K = LLAMA3_8B[layer]
    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(M, N, K, cuda, bias=False)
    out = fp8_linear_tma(x_fp8, x_scales, w_fp8, w_scales)
    ref = fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales)
    assert_within_fast_accumulation(out, ref, x_fp8, x_scales, w_fp8, w_scales)


@pytest.mark.gpu
@pytest.mark.parametrize("layer", ["qkv", "down"])
def test_pdl_launch_with_weight_prefetch_gives_the_same_bits_in_a_graph_gpu(layer, cuda, monkeypatch):
    """RMSNorm (letting its dependents launch early) -> TMA GEMM (PDL, weights prefetched) -> the same again on
    the GEMM's output, replayed from a CUDA graph: the bits of plain launches."""
    from modelgate.kernels.rms_norm import rms_norm

    N, K = LLAMA3_8B[layer]
    generator = torch.Generator(device=cuda).manual_seed(0)
    x = torch.randn(64, K, device=cuda, dtype=torch.bfloat16, generator=generator)
    weight = torch.rand(K, device=cuda, dtype=torch.bfloat16, generator=generator) + 0.5
    _, _, _, _, _, w_fp8, w_scales = make_problem(64, N, K, cuda, bias=False)
    _, _, _, _, _, w2_fp8, w2_scales = make_problem(64, K, N, cuda, bias=False)

    def chain():
        normed = rms_norm(x, weight, 1e-5, out_fp8=True).out
        y = fp8_linear_tma(normed.values, normed.scales, w_fp8, w_scales)
        again = rms_norm(y, torch.ones(N, device=cuda, dtype=torch.bfloat16), 1e-5, out_fp8=True).out
        return fp8_linear_tma(again.values, again.scales, w2_fp8, w2_scales)

    expected = chain()
    monkeypatch.setattr(fp8_gemm_tma, "PDL_PREFETCH_BYTES", 1024)
    assert torch.equal(chain(), expected)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = chain()
    for _ in range(3):
        captured.zero_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured, expected)
