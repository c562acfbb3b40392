"""The pure parts of `bench llm`: request patterns, prompts of exact length, token timelines, statistics."""

from __future__ import annotations

import itertools
import json

import pytest
from tokenizers import Tokenizer

from modelgate.clients.bench.llm_settings import LengthSettings
from modelgate.clients.bench.patterns import PatternError, request_plans
from modelgate.clients.bench.prompts import PromptBuilder
from modelgate.clients.bench.request_record import RequestRecord, TokenTimeline
from modelgate.clients.bench.statistics import distribution, least_squares_line
from tests.server_harness import EXAMPLE_REPOSITORY

TOKENIZER_DIR = EXAMPLE_REPOSITORY / "tiny_llm" / "1"


def take(lengths: LengthSettings, count: int, seed: int = 0):
    return list(itertools.islice(request_plans(lengths, seed), count))


def test_fixed_classes_and_weighted_mix():
    assert {(p.pattern, p.isl, p.osl) for p in take(LengthSettings(isl=7, osl=3), 5)} == {("fixed", 7, 3)}
    plans = take(LengthSettings(pattern="long-in-short-out", long_isl=900, short_osl=20), 3)
    assert [(p.isl, p.osl) for p in plans] == [(900, 20)] * 3
    mix = take(LengthSettings(pattern="mix", mix_weights={"short-in-long-out": 1, "long-in-long-out": 3}), 400)
    counts = {name: sum(p.pattern == name for p in mix) for name in ("short-in-long-out", "long-in-long-out")}
    assert sum(counts.values()) == 400 and 200 < counts["long-in-long-out"] < 400  # weight 3 of 4
    assert [p.index for p in mix[:3]] == [0, 1, 2]
    with pytest.raises(PatternError, match="unknown classes"):
        take(LengthSettings(pattern="mix", mix_weights={"medium": 1}), 1)


def test_distributions_are_seeded_bounded_and_fit_the_context():
    normal = LengthSettings(pattern="normal", isl=50, isl_stddev=20, osl=10, osl_stddev=30, max_model_len=64)
    first, again = take(normal, 200, seed=5), take(normal, 200, seed=5)
    assert first == again and len({p.isl for p in first}) > 10
    assert all(p.isl >= 1 and p.osl >= 1 and p.isl + p.osl <= 64 for p in first)
    uniform = take(LengthSettings(pattern="uniform", isl_min=5, isl_max=9, osl_min=2, osl_max=3), 300)
    assert {p.isl for p in uniform} == {5, 6, 7, 8, 9} and {p.osl for p in uniform} == {2, 3}


def test_shortening_keeps_the_shortest_prompt_the_source_makes():
    """An output as long as the context leaves the input its BOS and one token of its own, not one token that
    the server would count as two (the request would then ask for a token more than the context holds)."""
    lengths = LengthSettings(isl=32, osl=256, max_model_len=256)
    builder = PromptBuilder(TOKENIZER_DIR, seed=1)
    assert builder.shortest == 2  # tiny_llm's tokenizer adds BOS
    plan = next(request_plans(lengths, 0, builder.shortest))
    assert (plan.isl, plan.osl) == (2, 254)
    assert builder.build(plan.isl).num_tokens + plan.osl == 256
    assert take(LengthSettings(isl=1, osl=4), 1)[0].isl == 1  # without a tokenizer: 1
    assert next(request_plans(LengthSettings(isl=1, osl=4), 0, 2)).isl == 1  # the prompt source raises it, or refuses
    assert PromptBuilder(None).shortest == 1


def test_trace_lengths_are_replayed_in_order_and_cycled(tmp_path):
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(json.dumps({"isl": i, "osl": 2 * i, "ttc_s": 1.0}) for i in (3, 4, 5)) + "\n\n")
    plans = take(LengthSettings(pattern="trace", trace_file=trace), 5)
    assert [(p.pattern, p.isl, p.osl) for p in plans] == [
        ("trace", 3, 6),
        ("trace", 4, 8),
        ("trace", 5, 10),
        ("trace", 3, 6),
        ("trace", 4, 8),
    ]
    trace.write_text('{"isl": 3}\n')
    with pytest.raises(PatternError, match="trace.jsonl:1"):
        take(LengthSettings(pattern="trace", trace_file=trace), 1)


def test_prompts_encode_to_the_exact_length_the_server_counts():
    tokenizer = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    builder = PromptBuilder(TOKENIZER_DIR, seed=1)
    for length in (2, 3, 17, 100, 255, 600):
        for _ in range(5):
            prompt = builder.build(length)
            assert prompt.num_tokens == length == len(tokenizer.encode(prompt.text).ids)  # BOS included
    words = PromptBuilder(None).build(40)
    assert words.num_tokens is None and len(words.text.split()) == 30  # 0.75 words per token


def test_timeline_spreads_chunk_gaps_over_their_tokens():
    timeline = TokenTimeline()
    for elapsed, tokens in ((0.5, 1), (0.6, 0), (0.7, 2), (1.0, 1)):  # a chunk without tokens is no event
        timeline.add(elapsed, tokens)
    record = RequestRecord(0, "fixed", "generate_stream", started_at=0.0)
    timeline.fill_record(record, total_tokens=4)
    assert (record.osl, record.ttft_s, record.ttc_s) == (4, 0.5, 1.0)
    assert record.itl_positions == [1, 2, 3] and record.itl_s == pytest.approx([0.1, 0.1, 0.3])
    assert record.tpot_s == pytest.approx(0.5 / 3)


def test_usage_is_spread_over_chunks_that_did_not_count_tokens():
    timeline = TokenTimeline()
    for elapsed in (0.2, 0.4, 0.6):
        timeline.add(elapsed, None)
    record = RequestRecord(0, "fixed", "openai-chat", started_at=0.0)
    timeline.fill_record(record, total_tokens=5)  # 5 over 3 chunks: 1, 2, 2 (the later chunks take the rest)
    assert record.osl == 5 and record.itl_positions == [1, 2, 3, 4]
    assert record.itl_s == pytest.approx([0.1, 0.1, 0.1, 0.1])
    alone = RequestRecord(1, "fixed", "openai-chat", started_at=0.0)
    timeline.fill_record(alone, total_tokens=None)  # no usage: one token per chunk
    assert alone.osl == 3


def test_distribution_and_fit():
    stats = distribution([1.0, 2.0, 3.0, 4.0, None])
    assert (stats["count"], stats["mean"], stats["p50"], stats["p90"]) == (4, 2.5, 2.5, pytest.approx(3.7))
    assert distribution([]) is None
    fit = least_squares_line([10, 20, 30], [0.1 + 0.002 * x for x in (10, 20, 30)])
    assert fit["slope"] == pytest.approx(0.002) and fit["intercept"] == pytest.approx(0.1)
    assert least_squares_line([5, 5], [1, 2]) is None
