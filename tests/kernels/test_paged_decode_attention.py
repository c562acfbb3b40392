"""Paged decode attention against its torch reference (and that reference against a float64 loop)."""

import pytest
import torch

from modelgate.backends.llm.attention.torch_paged import TorchPagedAttention
from modelgate.kernels.paged_decode_attention import (
    COUNTER_OWNER,
    MIN_PARTITION_SIZE,
    SINGLE_PASS,
    DecodeConfig,
    DecodeSplit,
    paged_decode_attention,
    paged_decode_attention_reference,
    plan_decode_split,
)
from modelgate.kernels.reshape_and_cache import FP8_DTYPE
from modelgate.kernels.split_counters import split_counters
from tests.kernels.attention_references import (
    BF16_TOLERANCE,
    FP32_TOLERANCE,
    gather_dequantized,
    make_paged_cache,
    naive_attention_float64,
    random_fp8_bits,
)
from tests.kernels.kernel_checks import assert_graph_replays_equal, poisoned_outputs, relative_error

# Small tiles so that a 70-token context spans several tiles and partitions.
SMALL = DecodeConfig(block_n=16, num_warps=4, num_stages=1)
SPLIT_32 = DecodeSplit(num_partitions=3, partition_size=32)  # covers contexts up to 96
# More partitions than the shorter contexts have tiles: each sequence cuts its own context evenly.
SPLIT_8 = DecodeSplit(num_partitions=8, partition_size=16)


def query_dtype(cache_dtype):
    return torch.bfloat16 if cache_dtype == FP8_DTYPE else cache_dtype


def tolerance(dtype):
    return FP32_TOLERANCE if dtype == torch.float32 else BF16_TOLERANCE


def run_case(dev, lens, cache_dtype, num_heads, num_kv_heads, head_dim, block_size, window, split, config, seed):
    generator = torch.Generator().manual_seed(seed)
    cache = make_paged_cache(lens, block_size, num_kv_heads, head_dim, cache_dtype, dev, generator)
    q = torch.randn((len(lens), num_heads, head_dim), generator=generator).to(dev, query_dtype(cache_dtype))
    with poisoned_outputs():
        out = paged_decode_attention(
            q,
            cache.kv_cache,
            cache.block_tables,
            cache.context_lens,
            max(lens),
            kv_scales=cache.kv_scales,
            sliding_window=window,
            split=split,
            config=config,
        )
    expected = paged_decode_attention_reference(
        q, cache.kv_cache, cache.block_tables, cache.context_lens, kv_scales=cache.kv_scales, sliding_window=window
    )
    assert out.dtype == q.dtype and not out.isnan().any()
    return relative_error(out, expected)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16, FP8_DTYPE])
@pytest.mark.parametrize("num_kv_heads", [1, 2, 4])
def test_dtypes_and_gqa_groups(dev, cache_dtype, num_kv_heads):
    error = run_case(dev, [1, 7, 33, 70], cache_dtype, 4, num_kv_heads, 64, 16, None, None, None, seed=num_kv_heads)
    assert error < tolerance(query_dtype(cache_dtype))


@pytest.mark.parametrize(
    "cache_dtype, num_kv_heads, block_size, window, split",
    [
        (torch.float32, 2, 16, None, SPLIT_32),
        (torch.float32, 1, 8, 20, SINGLE_PASS),
        (torch.float32, 4, 8, 20, SPLIT_32),
        (torch.bfloat16, 2, 8, None, SPLIT_32),
        (torch.bfloat16, 1, 16, 5, SPLIT_32),
        (FP8_DTYPE, 2, 8, 20, SINGLE_PASS),
        (FP8_DTYPE, 1, 16, 20, SPLIT_32),
        (FP8_DTYPE, 4, 8, None, SPLIT_32),
        (torch.float32, 2, 16, 20, SPLIT_8),
        (FP8_DTYPE, 2, 16, None, SPLIT_8),
    ],
)
def test_windows_block_sizes_and_splits(dev, cache_dtype, num_kv_heads, block_size, window, split):
    lens = [70, 1, 33, 7, 65][: 1 + (num_kv_heads + block_size) % 5]  # 1 to 5 sequences
    error = run_case(dev, lens, cache_dtype, 4, num_kv_heads, 64, block_size, window, split, SMALL, seed=block_size)
    assert error < tolerance(query_dtype(cache_dtype))


def test_irregular_head_dim_and_group(dev):
    """head_dim 40 (masked up to 64) and 3 query heads per KV head (masked up to 16 rows)."""
    error = run_case(dev, [5, 70, 18], torch.float32, 6, 2, 40, 8, None, SPLIT_32, SMALL, seed=5)
    assert error < FP32_TOLERANCE


def test_split_equals_single_pass(dev):
    generator = torch.Generator().manual_seed(6)
    lens = [70, 3, 64, 33]
    cache = make_paged_cache(lens, 16, 2, 64, torch.float32, dev, generator)
    q = torch.randn((4, 4, 64), generator=generator).to(dev)
    args = (q, cache.kv_cache, cache.block_tables, cache.context_lens, 70)
    single = paged_decode_attention(*args, split=SINGLE_PASS, config=SMALL)
    for split in (DecodeSplit(5, 16), DecodeSplit(2, 48), SPLIT_8, DecodeSplit(1, 0)):
        assert relative_error(paged_decode_attention(*args, split=split, config=SMALL), single) < 1e-6


def test_fp8_cache_of_arbitrary_bits(dev):
    """Every e4m3 code (subnormals, +-448) dequantized in registers exactly as torch does."""
    generator = torch.Generator().manual_seed(7)
    cache = make_paged_cache([70, 9], 16, 2, 64, FP8_DTYPE, dev, generator)
    cache.kv_cache.copy_(random_fp8_bits(cache.kv_cache.shape, generator, dev))
    cache.kv_scales.copy_(torch.rand(cache.kv_scales.shape, generator=generator) * 1e-2)
    q = torch.randn((2, 4, 64), generator=generator).to(dev, torch.float16)
    for split in (SINGLE_PASS, SPLIT_32):
        out = paged_decode_attention(
            q,
            cache.kv_cache,
            cache.block_tables,
            cache.context_lens,
            70,
            kv_scales=cache.kv_scales,
            split=split,
            config=SMALL,
        )
        expected = paged_decode_attention_reference(
            q, cache.kv_cache, cache.block_tables, cache.context_lens, kv_scales=cache.kv_scales
        )
        assert relative_error(out, expected) < 2e-3  # fp16 P and output


@pytest.mark.parametrize(
    "cache_dtype, num_kv_heads, window, split",
    [
        (torch.float32, 2, None, SPLIT_8),
        (torch.float32, 1, 20, SPLIT_32),
        (FP8_DTYPE, 2, 9, SPLIT_8),  # FP8 words, window: partitions before the window are empty
        (torch.bfloat16, 4, None, DecodeSplit(5, 16)),
    ],
)
def test_split_combined_in_kernel(dev, cache_dtype, num_kv_heads, window, split):
    """The last partition program of each (sequence, KV head) combines the partials: the single pass's output
    (empty partitions and an empty context included), counters back to 0, the same bits on a second call."""
    generator = torch.Generator().manual_seed(14)
    lens = [70, 0, 3, 33, 16]  # 0: a padded CUDA-graph row; 3: fewer tiles than partitions
    cache = make_paged_cache(lens, 16, num_kv_heads, 64, cache_dtype, dev, generator)
    q = torch.randn((len(lens), 4, 64), generator=generator).to(dev, query_dtype(cache_dtype))
    args = (q, cache.kv_cache, cache.block_tables, cache.context_lens, max(lens))
    options = dict(kv_scales=cache.kv_scales, sliding_window=window, config=SMALL)
    with poisoned_outputs():
        out = paged_decode_attention(*args, split=split, **options)
    assert not split_counters(COUNTER_OWNER, dev, len(lens) * num_kv_heads).any(), "the last program resets"
    with poisoned_outputs():
        again = paged_decode_attention(*args, split=split, **options)
    assert torch.equal(out, again), "a second launch on the reset counters gives the same bits"
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    single = paged_decode_attention(*args, split=SINGLE_PASS, **options)
    assert relative_error(out, single) < (1e-6 if q.dtype == torch.float32 else tolerance(q.dtype))
    expected = paged_decode_attention_reference(
        q, cache.kv_cache, cache.block_tables, cache.context_lens, kv_scales=cache.kv_scales, sliding_window=window
    )
    assert relative_error(out, expected) < tolerance(q.dtype)


def test_combine_in_several_steps(dev, monkeypatch):
    """The combining program walks the partitions in steps (2 at a time here, 32 by default)."""
    import modelgate.kernels.decode_combine as module

    generator = torch.Generator().manual_seed(17)
    lens = [70, 20, 0]
    cache = make_paged_cache(lens, 8, 2, 64, torch.float32, dev, generator)
    q = torch.randn((3, 6, 64), generator=generator).to(dev)  # 3 query heads per KV head
    args = (q, cache.kv_cache, cache.block_tables, cache.context_lens, 70)
    monkeypatch.setattr(module, "MAX_COMBINE_PARTITIONS", 2)
    with poisoned_outputs():
        out = paged_decode_attention(*args, split=DecodeSplit(5, 16), config=SMALL)
    assert relative_error(out, paged_decode_attention(*args, split=SINGLE_PASS, config=SMALL)) < 1e-6
    assert not split_counters(COUNTER_OWNER, dev, 6).any()


@pytest.mark.parametrize("split", [SINGLE_PASS, SPLIT_32])
def test_empty_context_gives_zeros(dev, split):
    """Padded rows of a CUDA-graph batch (context_len 0) come out as zeros, never NaN."""
    generator = torch.Generator().manual_seed(8)
    cache = make_paged_cache([33, 1], 16, 1, 64, torch.float32, dev, generator)
    cache.context_lens[1] = 0
    q = torch.randn((2, 4, 64), generator=generator).to(dev)
    with poisoned_outputs():
        out = paged_decode_attention(
            q, cache.kv_cache, cache.block_tables, cache.context_lens, 33, split=split, config=SMALL
        )
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    expected = paged_decode_attention_reference(q, cache.kv_cache, cache.block_tables, cache.context_lens)
    assert relative_error(out, expected) < FP32_TOLERANCE


def test_softmax_scale_and_out_argument(dev):
    generator = torch.Generator().manual_seed(9)
    cache = make_paged_cache([20, 40], 8, 2, 64, torch.float32, dev, generator)
    q = torch.randn((2, 4, 64), generator=generator).to(dev)
    out = torch.full((2, 4, 64), float("nan"), device=dev)
    result = paged_decode_attention(
        q, cache.kv_cache, cache.block_tables, cache.context_lens, 40, softmax_scale=0.3, out=out
    )
    assert result is out
    expected = paged_decode_attention_reference(
        q, cache.kv_cache, cache.block_tables, cache.context_lens, softmax_scale=0.3
    )
    assert relative_error(out, expected) < FP32_TOLERANCE


@pytest.mark.parametrize("cache_dtype, window", [(torch.float32, None), (FP8_DTYPE, 6)])
def test_reference_matches_float64_loop(dev, cache_dtype, window):
    generator = torch.Generator().manual_seed(10)
    lens = [1, 7, 33]
    cache = make_paged_cache(lens, 8, 2, 64, cache_dtype, dev, generator)
    q = torch.randn((3, 4, 64), generator=generator).to(dev)
    expected = paged_decode_attention_reference(
        q, cache.kv_cache, cache.block_tables, cache.context_lens, kv_scales=cache.kv_scales, sliding_window=window
    )
    for index, length in enumerate(lens):
        keys, values = gather_dequantized(cache, index)
        naive = naive_attention_float64(q[index : index + 1], keys, values, [length - 1], 64**-0.5, window)
        assert relative_error(expected[index : index + 1].cpu(), naive) < 1e-6


def test_reference_matches_engine_torch_attention(dev):
    """Same window semantics as the engine's TorchPagedAttention (bf16 cache)."""
    generator = torch.Generator().manual_seed(11)
    lens = [70, 7, 33]
    cache = make_paged_cache(lens, 16, 2, 64, torch.bfloat16, dev, generator)
    q = torch.randn((3, 4, 64), generator=generator).to(dev, torch.bfloat16)
    engine = TorchPagedAttention(4, 2, 64, sliding_window=10)
    expected = engine._decode_rows(q, cache.kv_cache, cache.block_tables, cache.context_lens, 70)
    out = paged_decode_attention(
        q, cache.kv_cache, cache.block_tables, cache.context_lens, 70, sliding_window=10, config=SMALL
    )
    assert relative_error(out, expected) < BF16_TOLERANCE


def test_split_plan():
    # Batch 64 x 8 KV heads already gives an H100's 132 SMs ~4 programs each: no split.
    assert plan_decode_split(64, 8, 4096, 64, sms=132) == SINGLE_PASS
    # Batch 16: a quarter of that, so 4 partitions.
    assert plan_decode_split(16, 8, 4096, 64, sms=132) == DecodeSplit(4, 1024)
    # A small batch with a long context: 33 wanted, rounded to 64-token tiles.
    assert plan_decode_split(2, 8, 32768, 64, sms=132) == DecodeSplit(32, 1024)
    assert plan_decode_split(1, 8, 100, 64, sms=132) == SINGLE_PASS  # too short to cut
    plan = plan_decode_split(1, 1, 1000, 64, sms=132)
    assert plan.num_partitions * plan.partition_size >= 1000 and plan.partition_size >= MIN_PARTITION_SIZE


def _arguments(dev, **changes):
    generator = torch.Generator().manual_seed(12)
    cache = make_paged_cache([5, 9], 8, 2, 64, FP8_DTYPE, dev, generator)
    arguments = dict(
        q=torch.zeros((2, 4, 64), device=dev, dtype=torch.bfloat16),
        kv_cache=cache.kv_cache,
        block_tables=cache.block_tables,
        context_lens=cache.context_lens,
        max_context_len=9,
        kv_scales=cache.kv_scales,
    )
    arguments.update({name: make(arguments) for name, make in changes.items()})
    return arguments


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(q=lambda a: a["q"][0]), "q must be"),
        (dict(q=lambda a: a["q"][:, :3]), "multiple of num_kv_heads"),
        (dict(q=lambda a: a["q"][:, :, :32]), "KV heads of 64 dims"),
        (dict(q=lambda a: a["q"].to(torch.int32)), "q must be bfloat16"),
        (dict(kv_scales=lambda a: None), "needs kv_scales"),
        (dict(kv_cache=lambda a: a["kv_cache"].float(), kv_scales=lambda a: None), "q's dtype"),
        (dict(block_tables=lambda a: a["block_tables"].long()), "block_tables must be int32"),
        (dict(block_tables=lambda a: a["block_tables"][:1]), "block_tables must be int32"),
        (dict(context_lens=lambda a: a["context_lens"].long()), "context_lens must be int32"),
        (dict(split=lambda a: DecodeSplit(2, 24)), "multiple of block_n"),
        (dict(split=lambda a: DecodeSplit(2, 64), max_context_len=lambda a: 200), "do not cover"),
        (dict(config=lambda a: DecodeConfig(24, 4, 1)), "power of two"),
        (dict(sliding_window=lambda a: 0), "sliding_window"),
        (dict(out=lambda a: a["q"].float()), "out must be"),
    ],
)
def test_launcher_refuses_bad_arguments(dev, changes, message):
    arguments = _arguments(dev, **changes)
    with pytest.raises(ValueError, match=message):
        paged_decode_attention(
            arguments.pop("q"),
            arguments.pop("kv_cache"),
            arguments.pop("block_tables"),
            arguments.pop("context_lens"),
            arguments.pop("max_context_len"),
            **arguments,
        )


@pytest.mark.gpu
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, FP8_DTYPE])
@pytest.mark.parametrize("context_len", [1024, 4096])
def test_realistic_shapes_on_gpu(cuda, cache_dtype, context_len):
    """Batch 64, 32 query heads / 8 KV heads, head_dim 128, block 16; lengths spread up to context_len; the
    default plan, a single pass and 512-token partitions; with and without a sliding window."""
    generator = torch.Generator().manual_seed(13)
    lens = torch.randint(context_len // 2, context_len + 1, (64,), generator=generator).tolist()
    lens[0] = context_len
    cache = make_paged_cache(lens, 16, 8, 128, cache_dtype, cuda, generator)
    q = torch.randn((64, 32, 128), generator=generator).to(cuda, torch.bfloat16)
    for split in (None, SINGLE_PASS, DecodeSplit(context_len // 512, 512)):
        for window in (None, 700):
            with poisoned_outputs():
                out = paged_decode_attention(
                    q,
                    cache.kv_cache,
                    cache.block_tables,
                    cache.context_lens,
                    context_len,
                    kv_scales=cache.kv_scales,
                    sliding_window=window,
                    split=split,
                )
            expected = paged_decode_attention_reference(
                q,
                cache.kv_cache,
                cache.block_tables,
                cache.context_lens,
                kv_scales=cache.kv_scales,
                sliding_window=window,
            )
            assert relative_error(out, expected) < BF16_TOLERANCE, (split, window)


@pytest.mark.parametrize("split", [SINGLE_PASS, SPLIT_32])
def test_fp8_words_path_equals_the_byte_path(dev, split):
    """An FP8 cache read as int32 words (head_dim 64 and 128), with bf16 or fp16 dots, gives the byte-wise
    tiles' output."""
    for head_dim in (64, 128):
        generator = torch.Generator().manual_seed(head_dim)
        cache = make_paged_cache([70, 1, 33], 16, 2, head_dim, FP8_DTYPE, dev, generator)
        q = torch.randn((3, 4, head_dim), generator=generator).to(dev, torch.bfloat16)
        outputs = [
            paged_decode_attention(
                q,
                cache.kv_cache,
                cache.block_tables,
                cache.context_lens,
                70,
                kv_scales=cache.kv_scales,
                split=split,
                config=SMALL._replace(words=words, half_dots=half),
            )
            for words, half in ((False, False), (True, False), (True, True))
        ]
        assert relative_error(outputs[1], outputs[0]) < 1e-2
        assert relative_error(outputs[2], outputs[0]) < 1e-2
        expected = paged_decode_attention_reference(
            q, cache.kv_cache, cache.block_tables, cache.context_lens, kv_scales=cache.kv_scales
        )
        assert relative_error(outputs[1], expected) < BF16_TOLERANCE
        assert relative_error(outputs[2], expected) < BF16_TOLERANCE


@pytest.mark.gpu
def test_split_in_cuda_graph_gpu(cuda):
    """Batch 1 and Llama 3 8B heads under the split planned for 8192 tokens, eagerly and as a replayed CUDA
    graph: the counters are 0 after every launch and every replay gives the eager bits."""
    generator = torch.Generator().manual_seed(16)
    cache = make_paged_cache([3000], 16, 8, 128, torch.bfloat16, cuda, generator)
    q = torch.randn((1, 32, 128), generator=generator).to(cuda, torch.bfloat16)
    split = plan_decode_split(1, 8, 8192, 64, sms=torch.cuda.get_device_properties(cuda).multi_processor_count)
    assert split.num_partitions > 1

    def decode():
        return paged_decode_attention(q, cache.kv_cache, cache.block_tables, cache.context_lens, 8192, split=split)

    eager = decode()
    expected = paged_decode_attention_reference(q, cache.kv_cache, cache.block_tables, cache.context_lens)
    assert relative_error(eager, expected) < BF16_TOLERANCE
    assert torch.equal(eager, decode())
    assert_graph_replays_equal(decode, eager)
    assert not split_counters(COUNTER_OWNER, cuda, 8).any()
