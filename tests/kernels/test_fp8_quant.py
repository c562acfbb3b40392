"""FP8 quantization kernels against their torch references.

Tolerances: the kernel divides with IEEE rounding and converts to e4m3 rounding to nearest even, exactly as
the reference does, so the FP8 values may differ by at most 1 ULP (the allowance for a conversion that
rounds differently; none is expected) and the scales (amax / 448, exact inputs) must be equal.
Dequantized values are within the format's precision: |q * s - x| <= 2^-4 |x| (3 mantissa bits, half a step)
for normals, and <= 2^-10 s (half of the 2^-9 subnormal step) near zero.
"""

import subprocess
import sys

import pytest
import torch

import modelgate.kernels.fp8_quant as fp8_quant
from modelgate.kernels.fp8_quant import (
    FP8_MAX,
    MIN_SCALE,
    check_launchable,
    fp8_weight_from_checkpoint,
    quantize_per_token,
    quantize_per_token_reference,
    quantize_weight_per_channel,
    quantize_weight_per_channel_reference,
)
from tests.kernels.kernel_checks import assert_fp8_within_ulps, poisoned_outputs

DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def quantize_checked(x: torch.Tensor):
    with poisoned_outputs():
        q, scales = quantize_per_token(x)
    ref_q, ref_scales = quantize_per_token_reference(x)
    assert q.shape == x.shape and q.dtype == torch.float8_e4m3fn and q.is_contiguous()
    assert scales.shape == (x.shape[0],) and scales.dtype == torch.float32
    torch.testing.assert_close(scales, ref_scales, rtol=0, atol=0)
    assert_fp8_within_ulps(q, ref_q)
    return q, scales


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [16, 40, 100])
@pytest.mark.parametrize("M", [1, 3, 17])
def test_per_token_matches_reference(M, K, dtype, dev):
    x = torch.randn(M, K, device=dev).mul(torch.rand(M, 1, device=dev) * 10).to(dtype)
    quantize_checked(x)


def test_dequantized_values_within_format_precision(dev):
    x = torch.randn(17, 40, device=dev) * torch.logspace(-3, 3, 17, device=dev)[:, None]
    q, scales = quantize_checked(x)
    dequantized = q.float() * scales[:, None]
    bound = torch.maximum(x.abs() * 2**-4, scales[:, None] * 2**-10) * 1.0001
    assert ((dequantized - x).abs() <= bound).all()
    # The largest magnitude of each row lands on +-448: the whole e4m3 range is used.
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((17,), FP8_MAX, device=dev))


def test_two_pass_rows(monkeypatch, dev):
    # Rows longer than MAX_SINGLE_PASS_K are read twice (amax, then quantize), BLOCK_K columns at a time.
    monkeypatch.setattr(fp8_quant, "MAX_SINGLE_PASS_K", 32)
    assert not fp8_quant.quantize_rows_config(3, 100)["SINGLE_PASS"]
    quantize_checked(torch.randn(3, 100, device=dev, dtype=torch.bfloat16))


def test_round_to_nearest_even_on_the_grid(dev):
    # Every e4m3 value, every midpoint between neighbours (ties to even) and the floats just beside the
    # midpoints; 448 in the row makes the scale exactly 1, so these are the values converted.
    grid = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    grid = grid[~grid.isnan()].sort().values
    mids = (grid[1:] + grid[:-1]) / 2
    row = torch.cat([grid, mids, mids.nextafter(torch.tensor(1e9)), mids.nextafter(torch.tensor(-1e9))])
    x = torch.cat([row, torch.tensor([FP8_MAX])])[None, :].to(dev)
    q, scales = quantize_checked(x)
    assert scales.item() == 1.0
    assert torch.equal(q.view(torch.uint8), quantize_per_token_reference(x).values.view(torch.uint8))


def test_zero_row_and_saturation(dev):
    x = torch.zeros(3, 40, device=dev)
    x[1] = torch.linspace(-1e4, 1e4, 40)
    x[2, 5] = 1e-30  # amax far below MIN_SCALE * 448
    q, scales = quantize_checked(x)
    assert scales[0].item() == pytest.approx(MIN_SCALE) and scales[2].item() == pytest.approx(MIN_SCALE)
    assert torch.equal(q[0].float(), torch.zeros(40, device=dev))
    assert q[1].float().abs().max().item() == FP8_MAX
    assert not q.float().isnan().any()


def test_strided_rows_and_empty(dev):
    big = torch.randn(5, 64, device=dev, dtype=torch.bfloat16)
    x = big[:, 8:48]  # a slice of a fused projection's output: row stride 64
    assert x.stride() == (64, 1)
    quantize_checked(x)
    q, scales = quantize_per_token(torch.empty(0, 16, device=dev, dtype=torch.bfloat16))
    assert q.shape == (0, 16) and scales.shape == (0,)


@pytest.mark.parametrize("N,K", [(5, 16), (33, 40)])
def test_weight_per_channel_matches_reference(N, K, dev):
    w = (torch.randn(N, K, device=dev) * 0.02).to(torch.bfloat16)
    with poisoned_outputs():
        weight, scales = quantize_weight_per_channel(w)
    ref = quantize_weight_per_channel_reference(w)
    assert weight.shape == (N, K) and scales.shape == (N,)
    torch.testing.assert_close(scales, ref.scales, rtol=0, atol=0)
    assert_fp8_within_ulps(weight, ref.weight)


@pytest.mark.parametrize(
    "make_x, message",
    [
        (lambda d: torch.randn(16, device=d), "2-D"),
        (lambda d: torch.randn(2, 3, 16, device=d), "2-D"),
        (lambda d: torch.randint(0, 5, (4, 16), device=d), "bfloat16, float16 or float32"),
        (lambda d: torch.randn(4, 16, device=d).to(torch.float8_e4m3fn), "bfloat16, float16 or float32"),
        (lambda d: torch.randn(16, 4, device=d).t(), "unit column stride"),
        (lambda d: torch.randn(4, 0, device=d), "K > 0"),
    ],
)
def test_per_token_rejects_bad_input(make_x, message, dev):
    with pytest.raises(ValueError, match=message):
        quantize_per_token(make_x(dev))


def test_launch_needs_one_cuda_device():
    not_interpreted = object()  # a kernel built without TRITON_INTERPRET
    with pytest.raises(ValueError, match="CUDA device"):
        check_launchable(not_interpreted, "op", torch.zeros(2))
    with pytest.raises(ValueError, match="one device"):
        check_launchable(not_interpreted, "op", torch.zeros(2), torch.zeros(2, device="meta"))


def test_checkpoint_weights(dev):
    N, K = 6, 32
    w = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
    weight, scales = fp8_weight_from_checkpoint(w)
    assert weight.dtype == torch.float8_e4m3fn and scales.shape == (N,)
    assert_fp8_within_ulps(weight, quantize_weight_per_channel_reference(w).weight)
    # FP8 checkpoints load as they are; per-tensor and [N, 1] scales become float32 [N].
    for scale in (torch.tensor(0.5), torch.tensor([0.5]), torch.full((N, 1), 0.5), torch.full((N,), 0.5)):
        loaded = fp8_weight_from_checkpoint(weight, scale.to(dev, torch.bfloat16))
        assert loaded.weight is weight or torch.equal(loaded.weight.view(torch.uint8), weight.view(torch.uint8))
        assert loaded.scales.dtype == torch.float32 and loaded.scales.shape == (N,)
        assert torch.equal(loaded.scales, torch.full((N,), 0.5, device=dev))
    with pytest.raises(ValueError, match="needs its weight_scale"):
        fp8_weight_from_checkpoint(weight)
    with pytest.raises(ValueError, match="block-wise"):
        fp8_weight_from_checkpoint(weight, torch.ones(N // 2, K // 16, device=dev))
    with pytest.raises(ValueError, match="only FP8 weights carry scales"):
        fp8_weight_from_checkpoint(w, torch.ones(N, device=dev))


def test_references_import_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from modelgate.kernels.fp8_gemm import fp8_linear, fp8_linear_from_activations_reference\n"
        "from modelgate.kernels.fp8_quant import fp8_weight_from_checkpoint\n"
        "w = fp8_weight_from_checkpoint(torch.randn(5, 16))\n"
        "print(tuple(fp8_linear_from_activations_reference(torch.randn(3, 16), *w).shape))\n"
        "try:\n"
        "    fp8_linear(torch.zeros(3, 16).to(w.weight.dtype), torch.ones(3), *w)\n"
        "except RuntimeError as error:\n"
        "    print('triton is not installed' in str(error))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(3,", "5)", "True"]


# --- GPU: Llama-3-8B activation and weight shapes ----------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("K", [4096, 14336])
@pytest.mark.parametrize("M", [1, 16, 64, 256, 4096])
def test_per_token_gpu(M, K, cuda):
    x = (torch.randn(M, K, device=cuda) * torch.rand(M, 1, device=cuda) * 8).to(torch.bfloat16)
    x[0, 7] = 300.0  # one outlier: the rest of its row goes to small e4m3 values
    quantize_checked(x)


@pytest.mark.gpu
@pytest.mark.parametrize("N,K", [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)])
def test_weight_per_channel_gpu(N, K, cuda):
    w = (torch.randn(N, K, device=cuda) * 0.02).to(torch.bfloat16)
    with poisoned_outputs():
        weight, scales = quantize_weight_per_channel(w)
    ref = quantize_weight_per_channel_reference(w)
    torch.testing.assert_close(scales, ref.scales, rtol=0, atol=0)
    assert_fp8_within_ulps(weight, ref.weight)
