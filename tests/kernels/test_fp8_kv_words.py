"""FP8 KV words (kernels/fp8_kv_words.py): every finite e4m3 byte value lands in the right quarter, converted exactly,
by Triton's ops (the interpreter here) and by the inline PTX (GPU); the decode kernel gives the same bits with
either conversion."""

import pytest
import torch

from modelgate.kernels.fp8_kv_words import quarters_of_words
from modelgate.kernels.fp8_quant import tl, triton
from modelgate.kernels.paged_decode_attention import DecodeConfig, paged_decode_attention
from modelgate.kernels.reshape_and_cache import FP8_DTYPE
from tests.kernels.attention_references import make_paged_cache

ROWS, WORDS = 16, 32


@triton.jit
def _quarters_kernel(words_ptr, out_ptr, ROWS: tl.constexpr, WORDS: tl.constexpr, PTX: tl.constexpr):
    offsets = tl.arange(0, ROWS)[:, None] * WORDS + tl.arange(0, WORDS)[None, :]
    q0, q1, q2, q3 = quarters_of_words(tl.load(words_ptr + offsets), tl.float16, PTX)
    tl.store(out_ptr + offsets, q0)
    tl.store(out_ptr + ROWS * WORDS + offsets, q1)
    tl.store(out_ptr + 2 * ROWS * WORDS + offsets, q2)
    tl.store(out_ptr + 3 * ROWS * WORDS + offsets, q3)


def every_byte_as_words(device) -> torch.Tensor:
    """[ROWS, WORDS] int32 whose 2048 bytes hold every e4m3 code but the two NaNs (0x7f, 0xff: a cache never
    holds them, and the interpreter reads them as +-480) at least 8 times, shuffled."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.tensor([code for code in range(256) if code & 0x7F != 0x7F], dtype=torch.int32)
    values = codes.repeat(9)[: ROWS * WORDS * 4]
    values = values[torch.randperm(values.numel(), generator=generator)].to(torch.uint8)
    return values.view(torch.int32).view(ROWS, WORDS).to(device)


def expected_quarters(words: torch.Tensor) -> torch.Tensor:
    """[4, ROWS, WORDS] float16: byte j of each little-endian word, read as e4m3, in quarter j."""
    as_bytes = words.cpu().contiguous().view(torch.uint8).view(ROWS, WORDS, 4)
    return as_bytes.view(FP8_DTYPE).to(torch.float16).permute(2, 0, 1)


def convert(words: torch.Tensor, ptx: bool) -> torch.Tensor:
    out = torch.empty((4, ROWS, WORDS), dtype=torch.float16, device=words.device)
    _quarters_kernel[(1,)](words, out, ROWS=ROWS, WORDS=WORDS, PTX=ptx)
    return out.cpu()


def test_triton_ops_convert_every_byte_into_its_quarter(dev):
    words = every_byte_as_words(dev)
    expected = expected_quarters(words)
    assert torch.equal(convert(words, ptx=False), expected)


@pytest.mark.gpu
def test_ptx_converts_every_byte_into_its_quarter_gpu(cuda):
    words = every_byte_as_words(cuda)
    expected = expected_quarters(words)
    assert torch.equal(convert(words, ptx=True), expected)


@pytest.mark.gpu
@pytest.mark.parametrize("context_len", [192, 1024])
def test_decode_with_ptx_conversion_gives_the_same_bits_gpu(cuda, context_len):
    """Llama 3 8B heads, batch 32, FP8 cache, fp16 dots: the PTX conversion changes no output bit."""
    generator = torch.Generator().manual_seed(context_len)
    lens = torch.randint(1, context_len + 1, (32,), generator=generator).tolist()
    cache = make_paged_cache(lens, 16, 8, 128, FP8_DTYPE, cuda, generator)
    q = torch.randn((32, 32, 128), generator=generator).to(cuda, torch.bfloat16)
    config = DecodeConfig(block_n=64, num_warps=4, num_stages=2, half_dots=True)
    outputs = [
        paged_decode_attention(
            q,
            cache.kv_cache,
            cache.block_tables,
            cache.context_lens,
            context_len,
            kv_scales=cache.kv_scales,
            config=config._replace(ptx_convert=ptx),
        )
        for ptx in (False, True)
    ]
    assert torch.equal(outputs[0], outputs[1])
