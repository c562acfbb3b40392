"""SiLU-and-mul, plain and FP8 output, against its torch reference (the Llama MLP's silu(gate) * up).

Tolerances:
- plain output: within one unit in the last place of the output dtype (rtol 2^-7 bf16, 2^-10 fp16, 1e-6 fp32):
  the kernel's exp may differ from torch's by an fp32 ULP, which can flip a rounding to the output dtype;
- FP8 output: the fusion's contract is that values and scales are exactly quantize_per_token of the kernel's
  own plain output (bit for bit); against the reference's quantization the values are within 1 e4m3 ULP and
  the scales within the output dtype's rtol (a one-unit change of the row amax moves the scale by <= 2^-7).
"""

import pytest
import torch

import modelgate.kernels.silu_and_mul as silu_module
from modelgate.kernels.fp8_quant import quantize_per_token_reference
from modelgate.kernels.silu_and_mul import silu_and_mul, silu_and_mul_reference
from modelgate.kernels.silu_and_mul_split import silu_and_mul_fp8_split
from tests.kernels.kernel_checks import assert_fp8_within_ulps, poisoned_outputs

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
RTOL = {torch.bfloat16: 2**-7, torch.float16: 2**-10, torch.float32: 1e-6}


def make_input(num_tokens, inter, dtype, device, seed=0, row_stride=None):
    """[num_tokens, 2 * inter] gate | up, gates spread over silu's curved part and its tails."""
    generator = torch.Generator().manual_seed(seed)
    width = row_stride or 2 * inter
    x = torch.randn(num_tokens, width, generator=generator) * 4
    return x.to(device, dtype)[:, : 2 * inter]


def check_plain(out, expected):
    assert out.dtype == expected.dtype and out.shape == expected.shape and out.is_contiguous()
    rtol = RTOL[expected.dtype]
    torch.testing.assert_close(out.float(), expected.float(), rtol=rtol, atol=rtol * 1e-3)


def check_fp8(x, result):
    values, scales = result
    num_tokens, inter = x.shape[0], x.shape[1] // 2
    assert values.shape == (num_tokens, inter) and values.dtype == torch.float8_e4m3fn and values.is_contiguous()
    assert scales.shape == (num_tokens,) and scales.dtype == torch.float32
    own = quantize_per_token_reference(silu_and_mul(x))
    assert torch.equal(values.view(torch.uint8), own.values.view(torch.uint8))
    assert torch.equal(scales, own.scales)
    expected = silu_and_mul_reference(x, out_fp8=True)
    torch.testing.assert_close(scales, expected.scales, rtol=RTOL[x.dtype], atol=0)
    assert_fp8_within_ulps(values, expected.values, ulps=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", [1, 3, 7, 40])
@pytest.mark.parametrize("inter", [40, 100])
def test_matches_reference(num_tokens, inter, dtype, dev):
    x = make_input(num_tokens, inter, dtype, dev)
    with poisoned_outputs():
        out = silu_and_mul(x)
    check_plain(out, silu_and_mul_reference(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", [1, 7, 40])
def test_fp8_output_is_the_per_token_quantization(num_tokens, dtype, dev):
    x = make_input(num_tokens, 40, dtype, dev, seed=1)
    with poisoned_outputs():
        result = silu_and_mul(x, out_fp8=True)
    check_fp8(x, result)


def test_row_walk_over_several_tiles(monkeypatch, dev):
    # Rows past MAX_SINGLE_TILE walk in BLOCK_FP8 tiles (FP8) and the plain path spreads a row over programs
    # (14 at Llama 3 8B): the same with tiles of 32 columns over I = 100 (a partial last tile), one row each.
    monkeypatch.setattr(silu_module, "MAX_SINGLE_TILE", 32)
    monkeypatch.setattr(silu_module, "BLOCK_FP8", 32)
    monkeypatch.setattr(silu_module, "BLOCK_PLAIN", 32)
    monkeypatch.setattr(silu_module, "TILE_ELEMENTS", 32)
    x = make_input(5, 100, torch.bfloat16, dev, seed=2, row_stride=230)  # strided rows
    assert x.stride(0) == 230
    with poisoned_outputs():
        out = silu_and_mul(x)
        result = silu_and_mul(x, out_fp8=True)
    check_plain(out, silu_and_mul_reference(x))
    check_fp8(x, result)


def test_zero_rows(dev):
    x = make_input(0, 40, torch.bfloat16, dev)
    assert silu_and_mul(x).shape == (0, 40)
    values, scales = silu_and_mul(x, out_fp8=True)
    assert values.shape == (0, 40) and scales.shape == (0,)


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.randn(80), "x must be 2-D"),
        (torch.randn(3, 81), "even"),
        (torch.randn(3, 0), "even"),
        (torch.randint(0, 5, (3, 80)), "x must be bfloat16"),
        (torch.randn(80, 3).t(), "x needs unit column stride"),
    ],
)
def test_bad_arguments_name_the_field(x, message, dev):
    with pytest.raises(ValueError, match=f"silu_and_mul: .*{message}"):
        silu_and_mul(x.to(dev))


@pytest.mark.gpu
@pytest.mark.parametrize("num_tokens", [1, 64, 4096])
def test_llama_8b_shapes_on_gpu(num_tokens, cuda):
    """intermediate 14336, bf16 gate | up of the fused gate_up_proj; plain and FP8 outputs."""
    x = make_input(num_tokens, 14336, torch.bfloat16, cuda, seed=3)
    check_plain(silu_and_mul(x), silu_and_mul_reference(x))
    check_fp8(x, silu_and_mul(x, out_fp8=True))
    split = silu_and_mul(x, out_fp8=True, spread=True)
    one_program = silu_and_mul(x, out_fp8=True, spread=False)
    assert torch.equal(split.values.view(torch.uint8), one_program.values.view(torch.uint8))
    assert torch.equal(split.scales, one_program.scales)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens, inter", [(1, 100), (6, 100), (3, 64), (2, 17)])
def test_rows_spread_over_programs_give_the_same_bits(num_tokens, inter, dtype, dev):
    """kernels/silu_and_mul_split.py, 32-column chunks (a partial last chunk at I = 100 and 17, exact pieces at
    64): the values and scales of the one-program path, bit for bit, and a zero row's minimum scale."""
    x = make_input(num_tokens, inter, dtype, dev, seed=4, row_stride=2 * inter + 6)
    x[-1] = 0  # an all-zero row: scale MIN_SCALE, values 0
    with poisoned_outputs():
        split = silu_and_mul_fp8_split(x, chunk=32)
    one_program = silu_and_mul(x, out_fp8=True, spread=False)
    assert torch.equal(split.values.view(torch.uint8), one_program.values.view(torch.uint8))
    assert torch.equal(split.scales, one_program.scales)
    check_fp8(x, split)


def test_dispatch_spreads_rows_from_the_threshold(monkeypatch, dev):
    monkeypatch.setattr(silu_module, "SPLIT_MIN_TOKENS", 4)
    monkeypatch.setattr(silu_module, "SPLIT_CHUNK", 32)
    calls = []
    monkeypatch.setattr(silu_module, "silu_and_mul_fp8_split", lambda x: calls.append(x.shape[0]) or "split")
    for num_tokens in (3, 4, 9):
        result = silu_and_mul(make_input(num_tokens, 40, torch.bfloat16, dev), out_fp8=True)
        assert (result == "split") == (num_tokens >= 4)
    assert calls == [4, 9]
    assert isinstance(silu_and_mul(make_input(9, 32, torch.bfloat16, dev), out_fp8=True), tuple)  # one chunk
    assert silu_and_mul(make_input(9, 40, torch.bfloat16, dev)).dtype == torch.bfloat16  # plain output
    assert silu_and_mul(make_input(2, 32, torch.bfloat16, dev), out_fp8=True, spread=True) == "split"  # forced
    assert isinstance(silu_and_mul(make_input(9, 40, torch.bfloat16, dev), out_fp8=True, spread=False), tuple)
    assert calls == [4, 9, 2]
