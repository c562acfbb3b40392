"""The engine with a real (random-weight) model: in-flight batching gives each request's solo output."""

import pytest

from modelgate.backends.llm.engine import LLMEngine
from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.sampling_params import SamplingParams
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def _engine(checkpoint, **settings):
    options = dict(device="cpu", num_kv_blocks=64, block_size=4, max_model_len=256, show_progress=False)
    options.update(settings)
    return LLMEngine(checkpoint, EngineConfig(**options))


def _drain(engine, arrivals):
    """Run until done, adding one queued request per step; returns {id: (token ids, text, reason)}."""
    tokens, texts, reasons = {}, {}, {}
    pending = list(arrivals)
    steps = 0
    while pending or engine.has_unfinished:
        if pending:
            engine.add_request(*pending.pop(0))
        for output in engine.step():
            tokens.setdefault(output.request_id, []).extend(output.new_token_ids)
            texts[output.request_id] = texts.get(output.request_id, "") + output.new_text
            if output.finished:
                reasons[output.request_id] = output.finish_reason
        engine.kv_cache.check_invariants()
        steps += 1
        assert steps < 5000
    assert engine.kv_cache.pool.num_free_blocks == engine.kv_cache.pool.num_blocks
    return {rid: (tokens[rid], texts[rid], reasons[rid]) for rid in reasons}


def _prompts(engine, count, shared=""):
    words = ["quick brown", "lazy dog", "stitch in time", "apple a day", "café naïve", "日本語"]
    return [
        engine.tokenizer.encode(shared + " ".join(words[(i + j) % len(words)] for j in range(1 + i % 4)))
        for i in range(count)
    ]


GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"max_num_batched_tokens": 8},  # chunked prefill
        {"num_kv_blocks": 14},  # preemption by a tiny cache
        {"max_num_seqs": 3},
        {"enable_prefix_caching": False},
    ],
)
def test_concurrent_greedy_outputs_equal_solo_runs(checkpoint, settings):
    reference_engine = _engine(checkpoint)
    prompts = _prompts(reference_engine, 10)
    solo = {}
    for i, prompt in enumerate(prompts):
        solo.update(_drain(reference_engine, [(f"r{i}", prompt, GREEDY)]))
    engine = _engine(checkpoint, **settings)
    together = _drain(engine, [(f"r{i}", p, GREEDY) for i, p in enumerate(prompts)])
    assert together == solo
    if "num_kv_blocks" in settings:
        assert engine.scheduler.num_preemptions > 0


def test_prefix_cache_hits_keep_outputs(checkpoint):
    engine = _engine(checkpoint, num_kv_blocks=128)
    prompts = _prompts(engine, 6, shared="the quick brown fox jumps over the lazy dog " * 3)
    first = _drain(engine, [(f"a{i}", p, GREEDY) for i, p in enumerate(prompts)])
    hits_before = engine.kv_cache.stats.num_hits
    second = _drain(engine, [(f"b{i}", p, GREEDY) for i, p in enumerate(prompts)])
    assert engine.kv_cache.stats.num_hits > hits_before
    assert [v for _, v in sorted(first.items())] == [v for _, v in sorted(second.items())]


def test_text_matches_decoding_the_tokens(checkpoint):
    engine = _engine(checkpoint)
    prompt = engine.tokenizer.encode("héllo wörld")
    result = _drain(engine, [("x", prompt, SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))])
    tokens, text, reason = result["x"]
    assert text == engine.tokenizer.decode(tokens) and reason == "length" and len(tokens) == 20


def test_the_first_token_output_carries_the_engines_time_to_it(checkpoint):
    """RequestOutput.engine_ttft_s (the server's trace records it beside its own TTFT): on the output that brings
    a request's first token, once, even after a chunked prefill's token-less steps; no later output has it."""
    engine = _engine(checkpoint, max_num_batched_tokens=8)
    prompt = engine.tokenizer.encode("quick brown lazy dog stitch in time apple a day")
    assert len(prompt) > 8  # a prefill of several chunks
    engine.add_request("x", prompt, SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))
    first_token_outputs, later = [], []
    while engine.has_unfinished:
        for output in engine.step():
            if output.engine_ttft_s is not None:
                first_token_outputs.append(output)
            elif first_token_outputs:
                later.append(output)
    assert len(first_token_outputs) == 1 and first_token_outputs[0].new_token_ids
    assert first_token_outputs[0].engine_ttft_s >= first_token_outputs[0].queue_time_s >= 0
    assert later and all(output.engine_ttft_s is None for output in later)


def test_stop_string_truncates_and_finishes(checkpoint):
    engine = _engine(checkpoint)
    prompt = engine.tokenizer.encode("quick brown")
    free_run = _drain(engine, [("x", prompt, SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))])
    text = free_run["x"][1]
    stop = text[5:8]
    assert stop and stop in text
    stopped = _drain(
        engine, [("y", prompt, SamplingParams(max_tokens=20, temperature=0, ignore_eos=True, stop=[stop]))]
    )
    assert stopped["y"][1] == text[: text.index(stop)] and stopped["y"][2] == "stop"
    kept = _drain(
        engine,
        [
            (
                "z",
                prompt,
                SamplingParams(
                    max_tokens=20, temperature=0, ignore_eos=True, stop=[stop], include_stop_str_in_output=True
                ),
            )
        ],
    )
    assert kept["z"][1] == text[: text.index(stop) + len(stop)]


def test_seeded_sampling_is_reproducible_and_abort_frees_blocks(checkpoint):
    engine = _engine(checkpoint)
    prompt = engine.tokenizer.encode("apple a day")
    seeded = SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, top_k=50, seed=7, ignore_eos=True)
    one = _drain(engine, [("s1", prompt, seeded)])["s1"]
    two = _drain(engine, [("s2", prompt, seeded), ("other", prompt, GREEDY)])["s2"]
    assert one == two
    engine.add_request("long", prompt, SamplingParams(max_tokens=200, ignore_eos=True))
    engine.step()
    engine.step()
    assert engine.kv_cache.block_ids("long")
    output = engine.abort("long")
    assert output.finished and output.finish_reason == "abort"
    assert engine.kv_cache.pool.num_free_blocks == engine.kv_cache.pool.num_blocks
    assert not engine.has_unfinished


def test_engine_refuses_what_cannot_fit_its_context(checkpoint):
    engine = _engine(checkpoint, max_model_len=32)
    with pytest.raises(ValueError, match="do not fit max_model_len 32"):
        engine.add_request("big", list(range(3, 30)), SamplingParams(max_tokens=10))
    with pytest.raises(ValueError):
        engine.add_request("empty", [], SamplingParams(max_tokens=1))
    assert not engine.has_unfinished
