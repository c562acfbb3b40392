"""FP8 W8A8 GEMM against its torch reference, the bf16 GEMM and torch._scaled_mm.

Tolerances:
- against fp8_linear_reference (the same fp8 values and scales, fp32 matmul, same epilogue): the products
  of two e4m3 values are exact in fp32, so only the summation order and the final rounding differ:
  per element rtol 2^-7 (one bf16 ULP) + 1e-3 rms(ref); ||out - ref|| / ||ref|| < 1e-2. (Under the
  interpreter the outputs come out bit-equal.) On the GPU, Hopper's fp8 tensor cores sum in fewer bits
  than fp32 (Triton's default fast accumulation on sm_90; its error grows with K): rtol 2^-6 + 2e-2 rms(ref),
  still < 1e-2 overall; precise_accumulation must do at least as well.
- against torch._scaled_mm (rowwise scales, bf16 out, its default precise accumulation): as on the GPU above.
- against the unquantized bf16 GEMM: e4m3 keeps 3 mantissa bits, so each input is off by up to 2^-4
  relative; the errors of a K-long dot product mostly cancel: ||out - bf16|| / ||bf16|| < 2^-4.
"""

import pytest
import torch

from modelgate.kernels import fp8_gemm_cublas
from modelgate.kernels.fp8_gemm import (
    fp8_linear,
    fp8_linear_from_activations,
    fp8_linear_from_activations_reference,
    fp8_linear_reference,
)
from modelgate.kernels.fp8_gemm_configs import (
    DECODE_WIDE_CONFIG,
    MID_CONFIG,
    MID_NARROW_CONFIG,
    MID_TALL_CONFIG,
    PREFILL_CONFIG,
    PREFILL_NARROW_CONFIG,
    Fp8GemmConfig,
    select_config,
)
from modelgate.kernels.fp8_quant import (
    quantize_per_token,
    quantize_per_token_reference,
    quantize_weight_per_channel_reference,
)
from tests.kernels.kernel_checks import poisoned_outputs, relative_error

LLAMA3_8B = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}


def make_problem(M, N, K, dev, bias=True, x_dtype=torch.bfloat16):
    torch.manual_seed(M * 1_000_003 + N * 1009 + K)  # the same data whatever ran before (tiny N is noisy)
    x = (torch.randn(M, K, device=dev) * (1 + 4 * torch.rand(M, 1, device=dev))).to(x_dtype)
    w = (torch.randn(N, K, device=dev) * 0.05 * (1 + torch.rand(N, 1, device=dev))).to(torch.bfloat16)
    b = torch.randn(N, device=dev).to(torch.bfloat16) if bias else None
    x_fp8, x_scales = quantize_per_token_reference(x)
    w_fp8, w_scales = quantize_weight_per_channel_reference(w)
    return x, w, b, x_fp8, x_scales, w_fp8, w_scales


def assert_matches_reference(out, ref, rtol=2**-7, atol_of_rms=1e-3):
    """Per element |out - ref| <= atol + rtol |ref| with atol = atol_of_rms * rms(ref); overall < 1e-2."""
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert not out.float().isnan().any(), "NaN in the output: an element was never written"
    rms = ref.float().pow(2).mean().sqrt().item()
    torch.testing.assert_close(out.float(), ref.float(), rtol=rtol, atol=atol_of_rms * rms)
    assert relative_error(out, ref) < 1e-2


def assert_within_fast_accumulation(out, ref, x_fp8, x_scales, w_fp8, w_scales):
    """Hopper's fast FP8 accumulation (the default, as torch._scaled_mm's use_fast_accum=True) keeps fewer
    mantissa bits than fp32 while it sums a BLOCK_K slice, so its error grows with sum_k |x_k w_k|, not with
    |out|: per element |out - ref| <= 2^-7 |ref| + 2^-10 sum_k |x_k w_k| (scaled), and overall < 1e-2."""
    magnitude = (x_fp8.float().abs() * x_scales[:, None]) @ (w_fp8.float().abs() * w_scales[:, None]).T
    error = (out.float() - ref.float()).abs()
    allowed = 2**-7 * ref.float().abs() + 2**-10 * magnitude
    worst = (error - allowed).max().item()
    assert worst <= 0, f"an element is {worst:.3g} past |ref| 2^-7 + sum|x w| 2^-10"
    assert relative_error(out, ref) < 1e-2


def run_linear(x_fp8, x_scales, w_fp8, w_scales, b, **kwargs):
    with poisoned_outputs():
        return fp8_linear(x_fp8, x_scales, w_fp8, w_scales, b, **kwargs)


@pytest.mark.parametrize("K", [16, 40, 96])
@pytest.mark.parametrize("N", [5, 33])
@pytest.mark.parametrize("M", [1, 3, 17])
def test_matches_reference(M, N, K, dev):
    x, w, b, x_fp8, x_scales, w_fp8, w_scales = make_problem(M, N, K, dev, bias=(M + N + K) % 2 == 0)
    out = run_linear(x_fp8, x_scales, w_fp8, w_scales, b)
    assert_matches_reference(out, fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales, b))
    unquantized = torch.nn.functional.linear(x.float(), w.float(), None if b is None else b.float())
    assert relative_error(out, unquantized) < 2**-4


CONFIGS = {
    # Several M and N tiles, GROUP_M swizzle with a partial last group, K steps with a ragged tail.
    "small_tiles_grouped": Fp8GemmConfig(block_m=16, block_n=16, block_k=32, group_m=2, num_stages=2),
    # K split in 3 (the last split shorter), partials summed by the reduction kernel.
    "split_k": Fp8GemmConfig(block_m=16, block_n=32, block_k=32, split_k=3),
    # More splits asked for than K has blocks: fewer, non-empty splits.
    "split_k_clamped": Fp8GemmConfig(block_m=32, block_n=32, block_k=32, split_k=8),
    "prefill": PREFILL_CONFIG,
    "prefill_narrow": PREFILL_NARROW_CONFIG,
    "mid": MID_CONFIG,
    "mid_narrow": MID_NARROW_CONFIG,
    "mid_tall": MID_TALL_CONFIG,
}
GPU_TOLERANCE = dict(rtol=2**-6, atol_of_rms=2e-2)


@pytest.mark.parametrize("name", CONFIGS)
def test_configs(name, dev):
    M, N, K = (150, 70, 200) if name.startswith("prefill") else (40, 70, 200)
    _, _, b, x_fp8, x_scales, w_fp8, w_scales = make_problem(M, N, K, dev)
    out = run_linear(x_fp8, x_scales, w_fp8, w_scales, b, config=CONFIGS[name])
    assert_matches_reference(out, fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales, b))


@pytest.mark.parametrize("M", [1, 48, 200, 300])
def test_table_buckets(M, dev):
    # The table's own choice for each M bucket (decode 16/32/64, mid, prefill), irregular N and K.
    _, _, b, x_fp8, x_scales, w_fp8, w_scales = make_problem(M, 33, 72, dev)
    out = run_linear(x_fp8, x_scales, w_fp8, w_scales, b)
    assert_matches_reference(out, fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales, b))


def test_select_config_table():
    assert select_config(1, 28672, 4096) == Fp8GemmConfig(16, 64, 256, 1, 1, 4, 5)  # 448 tiles: no split
    assert select_config(1, 4096, 4096).split_k == 1  # K = 4096: unsplit measured faster on the H100
    assert select_config(1, 4096, 14336).split_k == 3  # 64 tiles on 132 SMs, long K: split
    assert select_config(16, 6144, 4096).split_k == 1
    assert select_config(17, 4096, 4096).block_m == 32 and select_config(64, 4096, 4096).block_m == 64
    assert select_config(64, 28672, 4096) == DECODE_WIDE_CONFIG  # 448 tiles: two programs per SM
    assert select_config(64, 6144, 4096).block_k == 256  # 96 tiles: the deep single-program pipeline
    # The mid bucket by tile count (Llama-3-8B's layers: qkv 6144x4096, o 4096x4096, gate_up 28672x4096, down
    # 4096x14336), the same for every M of a 64-row bucket.
    for M in (65, 100, 128):
        assert select_config(M, 28672, 4096) == PREFILL_CONFIG  # 112 wide tiles: 3/4 of the SMs
        assert select_config(M, 4096, 4096) == MID_NARROW_CONFIG  # 128 narrow tiles: one wave
        assert select_config(M, 4096, 14336) == MID_NARROW_CONFIG  # unsplit above the decode sizes
        assert select_config(M, 6144, 4096) == MID_CONFIG  # 192 narrow tiles, 96 of 64x128
    for M in (129, 192, 256):
        assert select_config(M, 6144, 4096) == MID_TALL_CONFIG  # 144-192 tiles of 64x128, 96 of 128x128
        assert select_config(M, 4096, 4096) == MID_CONFIG  # 96-128 tiles of 64x128: one wave
        assert select_config(M, 28672, 4096) == PREFILL_CONFIG
    assert select_config(100, 28672, 4096, num_sms=160) == MID_CONFIG  # 112 wide tiles: under 3/4 of 160 SMs
    assert select_config(4096, 4096, 4096) == PREFILL_CONFIG
    assert select_config(512, 4096, 4096) == PREFILL_NARROW_CONFIG  # 4 x 16 wide tiles < 132 SMs
    assert select_config(1, 5, 40) == Fp8GemmConfig(16, 32, 64, 1, 1, 4, 5)  # shrunk to the layer
    assert select_config(4096, 4096, 4096, num_sms=132) == select_config(4096, 4096, 4096)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
def test_out_dtypes_bias_dtypes_strided_rows(out_dtype, dev):
    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(17, 33, 40, dev, bias=False)
    wide = torch.zeros(17, 64, device=dev).to(torch.float8_e4m3fn)
    wide[:, :40] = x_fp8
    x_rows = wide[:, :40]  # row stride 64
    bias = torch.randn(33, device=dev, dtype=out_dtype)
    out = run_linear(x_rows, x_scales, w_fp8, w_scales, bias, out_dtype=out_dtype)
    ref = fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales, bias, out_dtype)
    assert_matches_reference(out, ref)


@pytest.mark.parametrize("M", [1, 3, 17])
def test_from_activations_fused_and_unfused(M, dev):
    x, _, b, _, _, w_fp8, w_scales = make_problem(M, 33, 40, dev)
    ref = fp8_linear_from_activations_reference(x, w_fp8, w_scales, b)
    with poisoned_outputs():
        unfused = fp8_linear_from_activations(x, w_fp8, w_scales, b)
        fused = fp8_linear_from_activations(x, w_fp8, w_scales, b, fused=True)
        fused_split = fp8_linear_from_activations(x, w_fp8, w_scales, b, fused=True, config=CONFIGS["split_k"])
    for out in (unfused, fused, fused_split):
        assert_matches_reference(out, ref)


def test_precise_accumulation(dev):
    # The interpreter has no reduced-precision accumulation: the same result, through the other dot.
    _, _, b, x_fp8, x_scales, w_fp8, w_scales = make_problem(17, 33, 200, dev)
    out = run_linear(x_fp8, x_scales, w_fp8, w_scales, b, precise_accumulation=True, config=CONFIGS["split_k"])
    assert_matches_reference(out, fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales, b))


def test_from_activations_leading_dims_and_empty(dev):
    x = torch.randn(2, 3, 40, device=dev, dtype=torch.bfloat16)
    w_fp8, w_scales = quantize_weight_per_channel_reference(torch.randn(5, 40, device=dev))
    out = fp8_linear_from_activations(x, w_fp8, w_scales)
    assert out.shape == (2, 3, 5) and out.dtype == torch.bfloat16
    assert_matches_reference(out, fp8_linear_from_activations_reference(x, w_fp8, w_scales))
    empty = fp8_linear(*quantize_per_token(x[:0, 0]), w_fp8, w_scales)
    assert empty.shape == (0, 5)


def _bad_args(dev):
    """(name, changes to the good arguments, expected message)."""
    x_fp8 = torch.zeros(3, 32, device=dev).to(torch.float8_e4m3fn)
    w_fp8 = torch.zeros(5, 32, device=dev).to(torch.float8_e4m3fn)
    return [
        ("x not fp8", dict(x_fp8=x_fp8.float()), "x must be one of"),
        ("w not fp8", dict(w_fp8=w_fp8.to(torch.bfloat16)), "w_fp8 must be one of"),
        ("x 3-D", dict(x_fp8=x_fp8[None]), "x must be 2-D"),
        ("K mismatch", dict(w_fp8=torch.zeros(5, 16, device=dev).to(torch.float8_e4m3fn)), r"\[N, K\]"),
        (
            "w column-strided",
            dict(w_fp8=torch.zeros(32, 5, device=dev).to(torch.float8_e4m3fn).t()),
            "unit column stride",
        ),
        ("x_scales shape", dict(x_scales=torch.ones(3, 1, device=dev)), r"x_scales must have shape \[3\]"),
        ("x_scales dtype", dict(x_scales=torch.ones(3, device=dev, dtype=torch.bfloat16)), "x_scales must be one"),
        ("w_scales strided", dict(w_scales=torch.ones(10, device=dev)[::2]), "w_scales must be contiguous"),
        ("bias shape", dict(bias=torch.ones(6, device=dev)), r"bias must have shape \[5\]"),
        ("out dtype", dict(out_dtype=torch.int8), "out_dtype"),
        ("K = 0", dict(x_fp8=x_fp8[:, :0], w_fp8=w_fp8[:, :0]), "K must be > 0"),
        ("bad config", dict(config=Fp8GemmConfig(block_m=24, block_n=32, block_k=32)), "power of two"),
        ("K step < 32", dict(config=Fp8GemmConfig(block_m=16, block_n=32, block_k=16)), r"block_k .* >= 32"),
    ]


@pytest.mark.parametrize("index", range(13))
def test_rejects_bad_arguments(index, dev):
    name, changes, message = _bad_args(dev)[index]
    args = dict(
        x_fp8=torch.zeros(3, 32, device=dev).to(torch.float8_e4m3fn),
        x_scales=torch.ones(3, device=dev),
        w_fp8=torch.zeros(5, 32, device=dev).to(torch.float8_e4m3fn),
        w_scales=torch.ones(5, device=dev),
        bias=None,
    )
    args.update(changes)
    with pytest.raises(ValueError, match=message):
        fp8_linear(**args)


def test_from_activations_rejects_fp8_input(dev):
    w_fp8 = torch.zeros(5, 32, device=dev).to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="x must be one of"):
        fp8_linear_from_activations(w_fp8, w_fp8, torch.ones(5, device=dev), fused=True)


# --- GPU: Llama-3-8B projection shapes ---------------------------------------------------------------------


def _scaled_mm_rowwise(x_fp8, x_scales, w_fp8, w_scales):
    try:
        return torch._scaled_mm(
            x_fp8, w_fp8.t(), scale_a=x_scales[:, None], scale_b=w_scales[None, :], out_dtype=torch.bfloat16
        )
    except RuntimeError as error:  # rowwise scaling needs sm_90 and a recent torch
        pytest.skip(f"torch._scaled_mm with rowwise scales unsupported here: {error}")


@pytest.fixture
def exact_fp32_matmul():
    was = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference must not round its operands to tf32
    yield
    torch.backends.cuda.matmul.allow_tf32 = was


@pytest.mark.gpu
@pytest.mark.parametrize("layer", LLAMA3_8B)
@pytest.mark.parametrize("M", [1, 16, 64, 256, 4096])
def test_llama3_8b_shapes_gpu(M, layer, cuda, exact_fp32_matmul, monkeypatch):
    monkeypatch.setattr(fp8_gemm_cublas, "SCALED_MM_MIN_M", 0)  # the Triton kernels (cuBLAS: test_fp8_gemm_cublas.py)
    N, K = LLAMA3_8B[layer]
    _, _, b, x_fp8, x_scales, w_fp8, w_scales = make_problem(M, N, K, cuda, bias=False)
    out = run_linear(x_fp8, x_scales, w_fp8, w_scales, None)
    ref = fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales)
    assert_within_fast_accumulation(out, ref, x_fp8, x_scales, w_fp8, w_scales)
    peer = _scaled_mm_rowwise(x_fp8, x_scales, w_fp8, w_scales)
    assert_within_fast_accumulation(out, peer, x_fp8, x_scales, w_fp8, w_scales)
    again = run_linear(x_fp8, x_scales, w_fp8, w_scales, None)
    assert torch.equal(out, again), "two runs on the same inputs differ: a race"
    precise = run_linear(x_fp8, x_scales, w_fp8, w_scales, None, precise_accumulation=True)
    assert_matches_reference(precise, ref, **GPU_TOLERANCE)
    assert relative_error(precise, ref) <= relative_error(out, ref) * 1.05 + 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("layer", LLAMA3_8B)
@pytest.mark.parametrize("M", [1, 16, 64])
def test_llama3_8b_from_activations_gpu(M, layer, cuda, exact_fp32_matmul):
    N, K = LLAMA3_8B[layer]
    x, _, b, _, _, w_fp8, w_scales = make_problem(M, N, K, cuda)
    ref = fp8_linear_from_activations_reference(x, w_fp8, w_scales, b)
    with poisoned_outputs():
        unfused = fp8_linear_from_activations(x, w_fp8, w_scales, b)
        fused = fp8_linear_from_activations(x, w_fp8, w_scales, b, fused=True)
    x_fp8, x_scales = quantize_per_token_reference(x)
    bias = b.float()  # compared without it: the bound is on the sum of products
    for out in (unfused, fused):
        assert_within_fast_accumulation(out.float() - bias, ref.float() - bias, x_fp8, x_scales, w_fp8, w_scales)
