"""Prefill / extend attention over the paged cache: chunked prefill, prefix hits, GQA, windows, FP8."""

import pytest
import torch

from modelgate.backends.llm.attention.metadata import AttentionMetadata
from modelgate.backends.llm.attention.torch_paged import TorchPagedAttention
from modelgate.kernels import prefill_attention as prefill_module
from modelgate.kernels.fp8_kv_words import as_words as words_view
from modelgate.kernels.paged_decode_attention import SINGLE_PASS, paged_decode_attention
from modelgate.kernels.prefill_attention import PrefillConfig, prefill_attention, prefill_attention_reference
from modelgate.kernels.reshape_and_cache import FP8_DTYPE, allocate_kv_cache, reshape_and_cache
from tests.kernels.attention_references import (
    BF16_TOLERANCE,
    FP32_TOLERANCE,
    gather_dequantized,
    make_paged_cache,
    naive_attention_float64,
    query_start_of,
    random_kv,
)
from tests.kernels.kernel_checks import poisoned_outputs, relative_error

# 16-row x 16-key tiles: the small shapes below span several query blocks and KV tiles.
SMALL = PrefillConfig(block_m=16, block_n=16, num_warps=4, num_stages=1)
# (cached prefix, new tokens) per sequence: fresh prefills, chunks over a prefix, a prefix hit of one token.
STEPS = [(0, 7), (16, 17), (33, 1), (5, 65), (0, 1)]


def query_dtype(cache_dtype):
    return torch.bfloat16 if cache_dtype == FP8_DTYPE else cache_dtype


def tolerance(dtype):
    return FP32_TOLERANCE if dtype == torch.float32 else BF16_TOLERANCE


def run_case(dev, steps, cache_dtype, num_heads, num_kv_heads, head_dim, block_size, window, config, seed):
    generator = torch.Generator().manual_seed(seed)
    num_queries = [new for _, new in steps]
    cache = make_paged_cache([p + n for p, n in steps], block_size, num_kv_heads, head_dim, cache_dtype, dev, generator)
    q = torch.randn((sum(num_queries), num_heads, head_dim), generator=generator).to(dev, query_dtype(cache_dtype))
    query_start = query_start_of(num_queries, dev)
    with poisoned_outputs():
        out = prefill_attention(
            q,
            cache.kv_cache,
            cache.block_tables,
            query_start,
            cache.context_lens,
            max(num_queries),
            kv_scales=cache.kv_scales,
            sliding_window=window,
            config=config,
        )
    expected = prefill_attention_reference(
        q,
        cache.kv_cache,
        cache.block_tables,
        query_start,
        cache.context_lens,
        kv_scales=cache.kv_scales,
        sliding_window=window,
    )
    assert out.dtype == q.dtype and not out.isnan().any()
    return relative_error(out, expected)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16, FP8_DTYPE])
@pytest.mark.parametrize("num_kv_heads", [1, 2, 4])
def test_dtypes_and_gqa_groups(dev, cache_dtype, num_kv_heads):
    error = run_case(dev, STEPS, cache_dtype, 4, num_kv_heads, 64, 16, None, SMALL, seed=num_kv_heads)
    assert error < tolerance(query_dtype(cache_dtype))


@pytest.mark.parametrize(
    "cache_dtype, num_kv_heads, block_size, window, config",
    [
        (torch.float32, 2, 8, 10, SMALL),
        (torch.float32, 1, 16, 3, None),
        (torch.bfloat16, 4, 8, 20, SMALL),
        (FP8_DTYPE, 1, 8, 10, SMALL),
        (FP8_DTYPE, 2, 16, None, None),
    ],
)
def test_windows_block_sizes_and_tiles(dev, cache_dtype, num_kv_heads, block_size, window, config):
    steps = STEPS[: 1 + (num_kv_heads + block_size) % 5] if config is None else STEPS
    error = run_case(dev, steps, cache_dtype, 4, num_kv_heads, 64, block_size, window, config, seed=block_size)
    assert error < tolerance(query_dtype(cache_dtype))


def test_irregular_head_dim_and_group(dev):
    """head_dim 40 and 3 query heads per KV head (GROUP_PAD 4: one padded row per token)."""
    error = run_case(dev, [(3, 20), (0, 9)], torch.float32, 6, 2, 40, 8, 12, SMALL, seed=3)
    assert error < FP32_TOLERANCE


def test_chunked_prefill_equals_whole_prefill(dev):
    """A 70-token prompt in one step, or as chunks of 33 and 37 over the cached first chunk: same outputs."""
    generator = torch.Generator().manual_seed(4)
    cache = make_paged_cache([70], 16, 2, 64, torch.float32, dev, generator)
    q = torch.randn((70, 4, 64), generator=generator).to(dev)

    def attend(rows: slice, context_len: int):
        lens = torch.tensor([context_len], dtype=torch.int32, device=dev)
        query_start = query_start_of([rows.stop - rows.start], dev)
        return prefill_attention(
            q[rows], cache.kv_cache, cache.block_tables, query_start, lens, rows.stop - rows.start, config=SMALL
        )

    whole = attend(slice(0, 70), 70)
    chunked = torch.cat([attend(slice(0, 33), 33), attend(slice(33, 70), 70)])
    assert relative_error(chunked, whole) < 1e-6


def test_one_query_per_sequence_equals_decode(dev):
    generator = torch.Generator().manual_seed(5)
    lens = [1, 7, 33, 70]
    cache = make_paged_cache(lens, 8, 1, 64, torch.float32, dev, generator)
    q = torch.randn((4, 4, 64), generator=generator).to(dev)
    query_start = query_start_of([1, 1, 1, 1], dev)
    prefill = prefill_attention(q, cache.kv_cache, cache.block_tables, query_start, cache.context_lens, 1, config=SMALL)
    decode = paged_decode_attention(q, cache.kv_cache, cache.block_tables, cache.context_lens, 70, split=SINGLE_PASS)
    assert relative_error(prefill, decode) < 1e-6


@pytest.mark.parametrize("max_query_len, expected", [(1, "short"), (2, "short"), (3, "default"), (None, "default")])
def test_short_query_tile_is_chosen_by_the_longest_query(monkeypatch, max_query_len, expected):
    monkeypatch.setattr(prefill_module, "SHORT_QUERY_TOKENS", 2)
    config = prefill_module.default_prefill_config(128, max_query_len)
    default = prefill_module.default_prefill_config(128)
    assert config == (prefill_module.SHORT_QUERY_CONFIG if expected == "short" else default)
    assert prefill_module.SHORT_QUERY_CONFIG != default
    # past head_dim 128 the short tile's keys would not fit shared memory: the large-head tile stays
    assert prefill_module.default_prefill_config(256, max_query_len) == prefill_module.default_prefill_config(256)


@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, FP8_DTYPE])
def test_decodes_on_the_short_query_tile_match_the_reference(dev, monkeypatch, cache_dtype):
    """A mixed step's one-token decodes as the launcher tiles them with the short-query switch on (GQA 4:1, a
    context over several 64-key tiles and one inside the first)."""
    monkeypatch.setattr(prefill_module, "SHORT_QUERY_TOKENS", 1)
    steps = [(129, 1), (5, 1), (200, 1)]
    error = run_case(dev, steps, cache_dtype, 8, 2, 64, 16, None, None, seed=21)
    assert error < tolerance(query_dtype(cache_dtype))


@pytest.fixture
def fp8_words(monkeypatch):
    """FP8_WORDS on; the list of the caches the launcher viewed as words (one entry per K and V of a launch)."""
    monkeypatch.setattr(prefill_module, "FP8_WORDS", True)
    viewed = []

    def as_words(cache):
        viewed.append(cache.shape)
        return words_view(cache)

    monkeypatch.setattr(prefill_module, "as_words", as_words)
    return viewed


@pytest.mark.parametrize(
    "num_kv_heads, block_size, window, config, steps",
    [
        (2, 16, None, SMALL, STEPS),  # GQA 2:1, prefixes and fresh prompts over several query blocks and tiles
        (1, 8, 10, SMALL, STEPS),  # 4:1 in a window
        (4, 16, None, None, STEPS[:3]),  # no grouping, the default 128-row tile
    ],
)
def test_an_fp8_cache_read_as_words_matches_the_reference(
    dev, fp8_words, num_kv_heads, block_size, window, config, steps
):
    error = run_case(dev, steps, FP8_DTYPE, 4, num_kv_heads, 64, block_size, window, config, seed=7 + block_size)
    assert len(fp8_words) == 2  # the words path ran
    assert error < BF16_TOLERANCE


def test_decodes_on_the_short_query_tile_read_fp8_words_too(dev, monkeypatch, fp8_words):
    monkeypatch.setattr(prefill_module, "SHORT_QUERY_TOKENS", 1)
    error = run_case(dev, [(129, 1), (5, 1), (200, 1)], FP8_DTYPE, 8, 2, 64, 16, None, None, seed=22)
    assert len(fp8_words) == 2 and error < BF16_TOLERANCE


def test_a_head_dim_words_cannot_split_reads_fp8_as_bytes(dev, fp8_words):
    """head_dim 40: a quarter would be 10 dims, under tl.dot's 16; the bytes path serves it."""
    error = run_case(dev, [(3, 20), (0, 9)], FP8_DTYPE, 4, 2, 40, 8, None, SMALL, seed=8)
    assert fp8_words == [] and error < BF16_TOLERANCE


@pytest.mark.parametrize("cache_dtype, window", [(torch.float32, None), (FP8_DTYPE, 9)])
def test_reference_matches_float64_loop(dev, cache_dtype, window):
    generator = torch.Generator().manual_seed(6)
    steps = [(0, 5), (16, 9)]
    cache = make_paged_cache([p + n for p, n in steps], 8, 2, 64, cache_dtype, dev, generator)
    q = torch.randn((14, 4, 64), generator=generator).to(dev)
    query_start = query_start_of([5, 9], dev)
    expected = prefill_attention_reference(
        q,
        cache.kv_cache,
        cache.block_tables,
        query_start,
        cache.context_lens,
        kv_scales=cache.kv_scales,
        sliding_window=window,
    )
    for index, (prefix, new) in enumerate(steps):
        rows = slice(int(query_start[index]), int(query_start[index + 1]))
        keys, values = gather_dequantized(cache, index)
        positions = list(range(prefix, prefix + new))
        naive = naive_attention_float64(q[rows], keys, values, positions, 64**-0.5, window)
        assert relative_error(expected[rows].cpu(), naive) < 1e-6


@pytest.mark.parametrize("window", [None, 6])
def test_kv_write_then_attention_matches_engine_torch_attention(dev, window):
    """One mixed engine step (fresh prefill, chunk over a prefix, decode) through reshape_and_cache and the
    Triton attention kernels, against the engine's TorchPagedAttention.forward on the same cache state."""
    generator = torch.Generator().manual_seed(7)
    block_size, num_kv_heads, head_dim = 8, 2, 64
    steps = [(0, 9), (12, 20), (30, 1)]
    cache = make_paged_cache(
        [p + n for p, n in steps], block_size, num_kv_heads, head_dim, torch.float32, dev, generator
    )
    torch_cache = cache.kv_cache.clone()
    num_queries = [n for _, n in steps]
    num_tokens = sum(num_queries)
    q = torch.randn((num_tokens, 4, head_dim), generator=generator).to(dev)
    k = random_kv((num_tokens, num_kv_heads, head_dim), generator, dev)
    v = random_kv((num_tokens, num_kv_heads, head_dim), generator, dev)
    slots = []
    for index, (prefix, new) in enumerate(steps):
        for position in range(prefix, prefix + new):
            slots.append(int(cache.block_tables[index, position // block_size]) * block_size + position % block_size)
    metadata = AttentionMetadata(
        slot_mapping=torch.tensor(slots, device=dev),
        query_start=query_start_of(num_queries, dev),
        context_lens=cache.context_lens,
        block_tables=cache.block_tables,
        query_start_cpu=query_start_of(num_queries, "cpu").tolist(),
        context_lens_cpu=cache.context_lens.tolist(),
        max_context_len=max(cache.context_lens.tolist()),
        is_decode_only=False,
    )
    expected = TorchPagedAttention(4, num_kv_heads, head_dim, sliding_window=window).forward(
        q, k, v, torch_cache, metadata
    )
    reshape_and_cache(k, v, cache.kv_cache, metadata.slot_mapping)
    assert torch.equal(cache.kv_cache, torch_cache)
    out = prefill_attention(
        q,
        cache.kv_cache,
        cache.block_tables,
        metadata.query_start,
        cache.context_lens,
        max(num_queries),
        sliding_window=window,
        config=SMALL,
    )
    assert relative_error(out, expected) < FP32_TOLERANCE


def test_fp8_cache_stays_close_to_unquantized_attention(dev):
    """The FP8 format's end-to-end cost: the same K/V written to a bf16 and to an FP8 cache."""
    generator = torch.Generator().manual_seed(8)
    steps = [(0, 40), (24, 30)]
    lens = [p + n for p, n in steps]
    reference = make_paged_cache(lens, 16, 2, 64, torch.bfloat16, dev, generator)
    # Unit-variance keys: scores of std ~1, as a trained model's are (the default keys vary 100x in size).
    reference.kv_cache[0].copy_(torch.randn(reference.kv_cache[0].shape, generator=generator))
    fp8_cache, fp8_scales = allocate_kv_cache(reference.kv_cache.shape[1], 16, 2, 64, FP8_DTYPE, dev)
    flat = reference.kv_cache.flatten(1, 2)  # [2, slots, heads, dim]
    slots = torch.arange(flat.shape[1], device=dev)
    reshape_and_cache(flat[0], flat[1], fp8_cache, slots, fp8_scales)
    q = torch.randn((70, 4, 64), generator=generator).to(dev, torch.bfloat16)
    query_start = query_start_of([40, 30], dev)
    args = (reference.block_tables, query_start, reference.context_lens, 40)
    exact = prefill_attention(q, reference.kv_cache, *args)
    quantized = prefill_attention(q, fp8_cache, *args, kv_scales=fp8_scales)
    # e4m3 keeps 3 mantissa bits (<= 2^-4 relative per element); measured 3.2e-2 on the output.
    assert relative_error(quantized, exact) < 5e-2


def _arguments(dev, **changes):
    generator = torch.Generator().manual_seed(9)
    cache = make_paged_cache([5, 9], 8, 2, 64, torch.bfloat16, dev, generator)
    arguments = dict(
        q=torch.zeros((6, 4, 64), device=dev, dtype=torch.bfloat16),
        kv_cache=cache.kv_cache,
        block_tables=cache.block_tables,
        query_start=query_start_of([3, 3], dev),
        context_lens=cache.context_lens,
        max_query_len=3,
    )
    arguments.update({name: make(arguments) for name, make in changes.items()})
    return arguments


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(q=lambda a: a["q"][0]), "q must be"),
        (dict(q=lambda a: a["q"][:, :3]), "multiple of num_kv_heads"),
        (dict(q=lambda a: a["q"].float()), "q's dtype"),
        (dict(query_start=lambda a: a["query_start"][:2]), "query_start must be int32"),
        (dict(query_start=lambda a: a["query_start"].long()), "query_start must be int32"),
        (dict(context_lens=lambda a: a["context_lens"][:1]), "block_tables must be int32"),
        (dict(kv_scales=lambda a: torch.ones(a["kv_cache"].shape[:4], device=a["q"].device)), "kv_scales given"),
        (dict(config=lambda a: PrefillConfig(48, 16, 4, 1)), "block_m"),
        (dict(sliding_window=lambda a: -1), "sliding_window"),
    ],
)
def test_launcher_refuses_bad_arguments(dev, changes, message):
    arguments = _arguments(dev, **changes)
    with pytest.raises(ValueError, match=message):
        prefill_attention(
            arguments.pop("q"),
            arguments.pop("kv_cache"),
            arguments.pop("block_tables"),
            arguments.pop("query_start"),
            arguments.pop("context_lens"),
            arguments.pop("max_query_len"),
            **arguments,
        )


@pytest.mark.gpu
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, FP8_DTYPE])
@pytest.mark.parametrize("window", [None, 1000])
def test_realistic_shapes_on_gpu(cuda, cache_dtype, window):
    """32 query / 8 KV heads, head_dim 128, block 16: chunks of 512 over 1k-3k prefixes and fresh 2k prompts."""
    steps = [(1024, 512), (3072, 512), (0, 2048), (0, 2048), (2000, 96), (4095, 1)]
    error = run_case(cuda, steps, cache_dtype, 32, 8, 128, 16, window, None, seed=10)
    assert error < BF16_TOLERANCE


@pytest.mark.gpu
@pytest.mark.parametrize("window", [None, 1000])
def test_realistic_shapes_read_as_fp8_words_on_gpu(cuda, fp8_words, window):
    """As above, the FP8 cache read as words (compiled, with the inline-PTX conversion on sm_89+)."""
    steps = [(1024, 512), (3072, 512), (0, 2048), (2000, 96), (4095, 1), (700, 1)]
    error = run_case(cuda, steps, FP8_DTYPE, 32, 8, 128, 16, window, None, seed=11)
    assert len(fp8_words) == 2 and error < BF16_TOLERANCE
