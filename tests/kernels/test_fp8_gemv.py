"""The single-token FP8-weight GEMV against its torch reference (fp32 sums: only summation order differs).

Tolerance: relative error < 1e-5 for fp32 x, and within 2 ULPs of the output dtype per element for bf16 output
(the reference rounds the same fp32 sum once).

Split K is reduced inside the launch by whichever program of a row block finishes last; SMALL_SPLIT forces
several splits on small, irregular shapes so the interpreter checks that path in milliseconds.
The SiLU-and-mul epilogue must equal the unfused kernels (the GEMV's [1, 2I] output, then silu_and_mul) bit for
bit under the interpreter: same sums, same roundings. Against silu_and_mul_reference(fp8_gemv_reference(...))
it is within 2 bf16 ULPs: the reference sums in another order, so gate or up may round one ULP apart, and
silu's relative slope stays below 2 for the gates of these small problems (above -3). At the 8B sizes gates
reach -10, where silu multiplies a relative change about 11 times: the GPU test compares the activation with
the reference activation of the kernel's own gate | up instead (2 ULPs: exp differs by an fp32 ULP or so).
"""

import pytest
import torch

from modelgate.kernels.fp8_gemv import GemvConfig, fp8_gemv, plan_split_k, split_k_counters
from modelgate.kernels.fp8_gemv_args import fp8_gemv_reference
from modelgate.kernels.fp8_quant import quantize_per_token_reference, quantize_weight_per_channel_reference
from modelgate.kernels.silu_and_mul import silu_and_mul, silu_and_mul_reference
from tests.kernels.kernel_checks import assert_graph_replays_equal, poisoned_outputs, relative_error

# 8-row programs over 32-byte K steps: K of a few hundred already splits (plan_split_k: up to K // 64 splits).
SMALL_SPLIT = GemvConfig(block_n=8, block_k=32, num_warps=4, programs_per_sm=4)


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
    assert plan_split_k(6144, 4096, 132) == 3  # 192 row programs of 32 rows: 3 splits reach 3 per SM
    assert plan_split_k(28672, 4096, 132) == 1  # 896 row programs are plenty
    assert plan_split_k(4096, 14336, 132) == 4
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
    x, w_fp8, w_scales, _ = make_problem(7, 64, dev)
    with pytest.raises(ValueError, match="even number of weight rows"):
        fp8_gemv(x, w_fp8, w_scales, silu_and_mul=True)


def bf16_ulps(actual: torch.Tensor, expected: torch.Tensor) -> int:
    """Largest distance in bf16 steps between the elements (bf16 bit patterns ordered as integers)."""

    def ordinal(t):
        bits = t.contiguous().view(torch.int16).to(torch.int32)
        return torch.where(bits < 0, -(bits & 0x7FFF), bits)

    return (ordinal(actual) - ordinal(expected)).abs().max().item()


@pytest.mark.parametrize("N, K", [(37, 300), (5, 1000), (16, 161)])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_split_k_reduced_in_kernel(N, K, x_dtype, dev):
    assert plan_split_k(N, K, 132, SMALL_SPLIT) > 1
    x, w_fp8, w_scales, b = make_problem(N, K, dev, x_dtype, bias=N % 2 == 1, seed=N)
    with poisoned_outputs():
        out = fp8_gemv(x, w_fp8, w_scales, b, config=SMALL_SPLIT)
    expected = fp8_gemv_reference(x, w_fp8, w_scales, b)
    if x_dtype == torch.float32:
        assert relative_error(out, expected) < 1e-5
    else:
        assert bf16_ulps(out, expected) <= 2
    assert not split_k_counters(out.device).any(), "the last program of each row block resets its counter"
    with poisoned_outputs():
        again = fp8_gemv(x, w_fp8, w_scales, b, config=SMALL_SPLIT)
    assert torch.equal(out, again), "a second launch on the reset counters gives the same bits"


def test_split_k_fp8_activations(dev):
    x, w_fp8, w_scales, b = make_problem(21, 500, dev, torch.bfloat16, bias=True, seed=5)
    x_fp8, x_scale = quantize_per_token_reference(x)
    out = fp8_gemv(x_fp8, w_fp8, w_scales, b, x_scale=x_scale, config=SMALL_SPLIT)
    assert bf16_ulps(out, fp8_gemv_reference(x_fp8, w_fp8, w_scales, b, x_scale=x_scale)) <= 2


@pytest.mark.parametrize("config", [SMALL_SPLIT, None], ids=["split", "unsplit"])
@pytest.mark.parametrize("x_kind", ["bf16", "fp8", "fp32"])
def test_silu_and_mul_epilogue(config, x_kind, dev):
    inter, K = 19, 300
    config = config or GemvConfig()
    x, w_fp8, w_scales, b = make_problem(
        2 * inter, K, dev, torch.float32 if x_kind == "fp32" else torch.bfloat16, bias=x_kind == "bf16", seed=11
    )
    x_scale = None
    if x_kind == "fp8":
        x, x_scale = quantize_per_token_reference(x)
    with poisoned_outputs():
        out = fp8_gemv(x, w_fp8, w_scales, b, x_scale, config=config, silu_and_mul=True)
    unfused = silu_and_mul(fp8_gemv(x, w_fp8, w_scales, b, x_scale, config=config))
    assert out.shape == (1, inter) and out.dtype == unfused.dtype
    if dev.type == "cpu":
        assert torch.equal(out, unfused)
    else:  # separately compiled kernels: allow a differently contracted fp32 operation
        torch.testing.assert_close(out, unfused, rtol=2**-7, atol=0)
    expected = silu_and_mul_reference(fp8_gemv_reference(x, w_fp8, w_scales, b, x_scale))
    if out.dtype == torch.bfloat16:
        assert bf16_ulps(out, expected) <= 2
    else:
        assert relative_error(out, expected) < 1e-5
    assert not split_k_counters(out.device).any()


@pytest.mark.gpu
@pytest.mark.parametrize("N, K", [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)])
def test_llama3_8b_shapes_gpu(N, K, cuda):
    x, w_fp8, w_scales, _ = make_problem(N, K, cuda)
    out = fp8_gemv(x, w_fp8, w_scales)
    expected = fp8_gemv_reference(x, w_fp8, w_scales)
    torch.testing.assert_close(
        out.float(), expected.float(), rtol=2**-7, atol=1e-3 * expected.float().abs().max().item()
    )
    assert torch.equal(out, fp8_gemv(x, w_fp8, w_scales)), "two runs differ: the split sums are not ordered"


@pytest.mark.gpu
def test_llama3_8b_mlp_gpu(cuda):
    """gate_up (N = 2 x 14336, K = 4096) with the SiLU epilogue, then down (N = 4096, K = 14336: split K) on its
    bf16 output, eagerly and as a replayed CUDA graph (the counters must be zero again after every launch)."""
    x, w_gate_up, s_gate_up, _ = make_problem(28672, 4096, cuda, seed=1)
    _, w_down, s_down, _ = make_problem(4096, 14336, cuda, seed=2)
    assert plan_split_k(4096, 14336, torch.cuda.get_device_properties(cuda).multi_processor_count) > 1

    def mlp():
        return fp8_gemv(fp8_gemv(x, w_gate_up, s_gate_up, silu_and_mul=True), w_down, s_down)

    activated = fp8_gemv(x, w_gate_up, s_gate_up, silu_and_mul=True)
    gate_up = fp8_gemv(x, w_gate_up, s_gate_up)
    torch.testing.assert_close(activated, silu_and_mul(gate_up), rtol=2**-7, atol=0)
    assert bf16_ulps(activated, silu_and_mul_reference(gate_up)) <= 2
    eager = mlp()
    expected = fp8_gemv_reference(activated, w_down, s_down).float()
    torch.testing.assert_close(eager.float(), expected, rtol=2**-7, atol=1e-3 * expected.abs().max().item())
    assert_graph_replays_equal(mlp, eager)
    assert not split_k_counters(cuda).any()


@pytest.mark.gpu
@pytest.mark.parametrize("prefetch", [False, True])
def test_dependent_launch_and_prefetch_gpu(prefetch, cuda):
    """PDL and the L2 prefetch change when the weights are read, not what is computed: a norm -> gate_up (SiLU)
    -> down -> o chain, each GEMV launched while the kernel before it still runs, gives the bits of the plain
    launches, eagerly and from a replayed CUDA graph."""
    from modelgate.kernels.fp8_gemv import _fp8_gemv_kernel
    from modelgate.kernels.grid_dependency import pdl_supported
    from modelgate.kernels.rms_norm import rms_norm

    assert pdl_supported(_fp8_gemv_kernel, cuda) == (torch.cuda.get_device_capability(cuda) >= (9, 0))
    x, w_gate_up, s_gate_up, _ = make_problem(28672, 4096, cuda, seed=1)
    _, w_down, s_down, _ = make_problem(4096, 14336, cuda, seed=2)
    _, w_o, s_o, _ = make_problem(4096, 4096, cuda, seed=3)
    residual, norm_weight = torch.randn_like(x), torch.rand_like(x[0]) + 0.5

    def chain(pdl: bool, prefetch: bool):
        config = GemvConfig(pdl=pdl)
        normed, _ = rms_norm(x, norm_weight, 1e-5, residual.clone())
        activated = fp8_gemv(normed, w_gate_up, s_gate_up, silu_and_mul=True, config=config, prefetch_weights=prefetch)
        down = fp8_gemv(activated, w_down, s_down, config=config, prefetch_weights=prefetch)
        return fp8_gemv(down, w_o, s_o, config=config, prefetch_weights=prefetch)

    plain = chain(False, False)
    assert torch.equal(chain(True, prefetch), plain)
    assert_graph_replays_equal(lambda: chain(True, prefetch), plain)
    assert not split_k_counters(cuda).any()
