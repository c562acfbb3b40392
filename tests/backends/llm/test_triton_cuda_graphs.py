"""Decode CUDA graphs (backends/llm/cuda_graphs.py): the padded static-buffer path gives the eager engine's tokens.

On the CPU the graphs' path runs eagerly (`replay=False`) under the Triton interpreter: padding rows (slot -1,
context 0), the fixed decode split planned from max_model_len and the staged inputs are what is checked. On a
GPU (`-m gpu`) the graphs are captured and replayed for real.
"""

import torch

from tests.backends.llm.triton_interpreter import interpret_kernels_without_cuda  # noqa: E402

interpret_kernels_without_cuda()

import msgspec  # noqa: E402
import pytest  # noqa: E402

from modelgate.backends.llm.cuda_graphs import capture_sizes  # noqa: E402
from modelgate.backends.llm.engine import LLMEngine  # noqa: E402
from modelgate.backends.llm.engine_config import EngineConfig  # noqa: E402
from modelgate.backends.llm.sampling_params import SamplingParams  # noqa: E402
from tests.backends.llm.greedy import greedy_tokens  # noqa: E402
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# Different output lengths make the decode batch shrink 5 -> 3 -> 2 -> 1, so steps pad to 8, 4 and 1 rows.
REQUESTS = {"quick brown fox": 7, "lazy dog": 3, "stitch in time saves": 5, "apple a day": 3, "café": 9}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("graphs"), intermediate_size=128, max_position_embeddings=1024)


def _engine(directory, device=DEVICE, dtype="float32", **settings) -> LLMEngine:
    options = dict(
        device=device,
        dtype=dtype,
        num_kv_blocks=96,
        block_size=4,
        max_model_len=600,
        show_progress=False,
        attention_backend="triton",
        enforce_eager=True,
    )
    options.update(settings)
    return LLMEngine(directory, EngineConfig(**options))


def _graphed(directory, **settings) -> LLMEngine:
    """_engine with decode graphs for batches of 1, 4 and 8 (captured on a GPU, their padded path here)."""
    engine = _engine(directory, **settings)
    engine.runner.use_decode_graphs([1, 4, 8], replay=CUDA)
    return engine


def _greedy(engine: LLMEngine) -> dict[str, list[int]]:
    return greedy_tokens(engine, REQUESTS)


def _count_graph_steps(engine: LLMEngine) -> list[int]:
    """Record the batch size of every step that goes through the graphs."""
    graphs, sizes = engine.runner.decode_graphs, []
    run = graphs.run

    def counting_run(rows, device_token_ids=None):
        sizes.append(rows.num_seqs)
        return run(rows, device_token_ids)

    graphs.run = counting_run
    return sizes


def test_capture_sizes():
    assert capture_sizes(0) == []
    assert capture_sizes(1) == [1]
    assert capture_sizes(6) == [1, 2, 4, 6]
    assert capture_sizes(40) == [1, 2, 4, 8, 16, 32, 40]
    assert capture_sizes(64) == [1, 2, 4, 8, 16, 32, 48, 64]


def test_graph_batch_sizes_follow_the_engine_config():
    assert LLMEngine._graph_batch_sizes(EngineConfig(max_num_seqs=20)) == [1, 2, 4, 8, 16, 20]
    assert LLMEngine._graph_batch_sizes(EngineConfig(max_num_seqs=512))[-2:] == [496, 512]  # every batch it forms
    assert LLMEngine._graph_batch_sizes(EngineConfig(max_num_seqs=500, cuda_graph_max_batch_size=32))[-1] == 32
    assert LLMEngine._graph_batch_sizes(EngineConfig(enforce_eager=True)) == []
    assert LLMEngine._graph_batch_sizes(EngineConfig(cuda_graph_max_batch_size=0)) == []


def test_padded_graph_path_gives_the_eager_tokens(tiny):
    expected = _greedy(_engine(tiny))
    engine = _graphed(tiny)
    # max_model_len 600 at batch <= 8 makes the planned split cut the context into partitions.
    split = engine.runner.decode_graphs._metadata(1).decode_split
    assert split.num_partitions > 1
    sizes = _count_graph_steps(engine)
    assert _greedy(engine) == expected
    assert sizes and max(sizes) == len(REQUESTS) and min(sizes) == 1
    assert set(sizes) >= {5, 3, 1}  # padded to 8, 4 and 1


def test_steps_larger_than_the_graphs_run_eagerly(tiny):
    expected = _greedy(_engine(tiny))
    engine = _engine(tiny)
    engine.runner.use_decode_graphs([1, 2], replay=CUDA)
    sizes = _count_graph_steps(engine)
    assert _greedy(engine) == expected
    assert sizes and max(sizes) <= 2


def _count_ahead_launches(engine: LLMEngine) -> list[int]:
    """Record the batch size of every decode step launched ahead of its predecessor's tokens."""
    runner, sizes = engine.runner, []
    launch_ahead = runner.launch_ahead

    def counting(output, previous, pending):
        sizes.append(len(output.scheduled))
        return launch_ahead(output, previous, pending)

    runner.launch_ahead = counting
    return sizes


def _finish_all(engine: LLMEngine) -> dict[str, tuple[list[int], str]]:
    """Step the engine until every request finished: each one's tokens and finish reason."""
    tokens, reasons = {}, {}
    while engine.has_unfinished:
        for output in engine.step():
            tokens.setdefault(output.request_id, []).extend(output.new_token_ids)
            if output.finished:
                reasons[output.request_id] = output.finish_reason
    return {rid: (tokens[rid], reasons[rid]) for rid in tokens}


def _stopping_greedy(engine: LLMEngine, stop_token: int) -> dict[str, tuple[list[int], str]]:
    """Every request greedy; the first also stops on `stop_token` (a token it meets mid-way)."""
    for i, (text, max_tokens) in enumerate(REQUESTS.items()):
        stops = [stop_token] if i == 0 else []
        sampling = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True, stop_token_ids=stops)
        engine.add_request(f"r{i}", engine.tokenizer.encode(text), sampling)
    return _finish_all(engine)


def test_decode_steps_launched_ahead_give_the_same_tokens(tiny):
    """launch_decode_ahead queues each decode step before the last one's tokens are read back: the tokens and
    finish reasons are those of the engine that waits, through a stop token (a request that stops computes one
    row more, dropped) and the batch shrinking as requests reach max_tokens."""
    expected = _greedy(_engine(tiny))
    stop_token = expected["r0"][3]
    waiting = _graphed(tiny, launch_decode_ahead=False)
    none_ahead = _count_ahead_launches(waiting)
    reference = _stopping_greedy(waiting, stop_token)
    assert none_ahead == []
    assert reference["r0"] == (expected["r0"][:4], "stop")
    ahead = _graphed(tiny)
    sizes = _count_ahead_launches(ahead)
    assert _stopping_greedy(ahead, stop_token) == reference
    assert len(sizes) >= 4 and max(sizes) == len(REQUESTS)
    assert not ahead.has_unfinished and ahead.kv_cache.num_requests_holding_blocks() == 0


def _penalized(engine: LLMEngine) -> dict[str, list[int]]:
    """REQUESTS with penalties (greedy or seeded; one plain greedy among them), stepped to the end."""
    samplings = [
        SamplingParams(temperature=0, repetition_penalty=1.6),
        SamplingParams(temperature=0, presence_penalty=1.2, frequency_penalty=0.8),
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.9, seed=51, frequency_penalty=1.5, repetition_penalty=1.2),
        SamplingParams(temperature=0, frequency_penalty=2.0),
    ]
    return _drawn(engine, samplings, default_seed=0)


def test_requests_with_penalties_are_launched_ahead(tiny):
    """Penalties count each request's tokens on the device (device_penalties.py), the one still on its way
    included: their decode steps are launched ahead, and the tokens are the waiting engine's, which differ from
    plain greedy ones (the penalties did count)."""
    expected = _penalized(_graphed(tiny, launch_decode_ahead=False))
    ahead = _graphed(tiny)
    sizes = _count_ahead_launches(ahead)
    assert _penalized(ahead) == expected
    assert len(sizes) >= 4 and max(sizes) == len(REQUESTS)
    greedy = _greedy(_engine(tiny))
    assert expected["r2"] == greedy["r2"]
    assert expected["r4"] != greedy["r4"]  # café repeats one token greedily; a frequency penalty breaks that


def _stopping_after_min_tokens(engine: LLMEngine, min_tokens: int, stops: list[int]) -> dict:
    """Every request greedy, 9 tokens at most, stopping on `stops` once past `min_tokens`: each request's
    tokens and finish reason."""
    for i, text in enumerate(REQUESTS):
        sampling = SamplingParams(
            max_tokens=9, temperature=0, ignore_eos=True, min_tokens=min_tokens, stop_token_ids=stops
        )
        engine.add_request(f"r{i}", engine.tokenizer.encode(text), sampling)
    return _finish_all(engine)


def test_requests_with_min_tokens_are_launched_ahead_and_count_the_token_on_the_device(tiny):
    """min_tokens masks stop tokens on the device path too, so such requests are launched ahead; a step
    launched ahead counts its input token, still on the device, among the outputs before its own: the tokens
    and finish reasons are the waiting engine's, which stops some request on the first token min_tokens
    allows (one step later or earlier would differ)."""
    stops = sorted({tokens[2] for tokens in _greedy(_engine(tiny)).values()})  # tokens greedy reaches early
    waiting = _graphed(tiny, launch_decode_ahead=False)
    expected = _stopping_after_min_tokens(waiting, 2, stops)
    assert any(reason == "stop" and len(tokens) == 3 for tokens, reason in expected.values())
    ahead = _graphed(tiny)
    sizes = _count_ahead_launches(ahead)
    assert _stopping_after_min_tokens(ahead, 2, stops) == expected
    assert len(sizes) >= 4 and max(sizes) == len(REQUESTS)


def _with_logprobs(engine: LLMEngine) -> dict[str, tuple[list[int], list[dict[int, float]]]]:
    """REQUESTS greedy or seeded, some asking for logprobs (0, 2 or 5 top tokens): each request's tokens and
    logprobs."""
    samplings = [
        SamplingParams(temperature=0, logprobs=2),
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.9, seed=31, logprobs=0),
        SamplingParams(temperature=0.8, top_k=20, seed=32),
        SamplingParams(temperature=0, logprobs=5),
    ]
    for i, ((text, max_tokens), sampling) in enumerate(zip(REQUESTS.items(), samplings)):
        sampling = msgspec.structs.replace(sampling, max_tokens=max_tokens, ignore_eos=True)
        engine.add_request(f"r{i}", engine.tokenizer.encode(text), sampling)
    results: dict[str, tuple[list[int], list[dict[int, float]]]] = {}
    while engine.has_unfinished:
        for output in engine.step():
            tokens, logprobs = results.setdefault(output.request_id, ([], []))
            tokens.extend(output.new_token_ids)
            logprobs.extend(output.logprobs)
    return results


def test_requests_asking_for_logprobs_are_launched_ahead(tiny):
    """Logprobs come from the device with the tokens (logprob_rows.py): a batch asking for them is launched
    ahead, and each token's logprobs are the waiting engine's, one dict per token, only where asked."""
    expected = _with_logprobs(_graphed(tiny, launch_decode_ahead=False))
    ahead = _graphed(tiny)
    sizes = _count_ahead_launches(ahead)
    results = _with_logprobs(ahead)
    assert len(sizes) >= 4 and max(sizes) == len(REQUESTS)
    assert {rid: tokens for rid, (tokens, _) in results.items()} == {rid: t for rid, (t, _) in expected.items()}
    for rid, (tokens, logprobs) in results.items():
        if rid in ("r1", "r3"):
            assert logprobs == [], rid
            continue
        assert len(logprobs) == len(tokens) == len(expected[rid][1])
        for token, ours, theirs in zip(tokens, logprobs, expected[rid][1]):
            assert token in ours and ours == pytest.approx(theirs), rid


def _sampled(engine: LLMEngine, seed: int) -> dict[str, list[int]]:
    """REQUESTS drawn unseeded (the device's generator seeded with `seed` first), one greedy among them."""
    samplings = [
        SamplingParams(temperature=0.8, top_p=0.95),
        SamplingParams(temperature=1.0, top_k=20, min_p=0.05),
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.3),
        SamplingParams(temperature=0.6, top_p=0.9, top_k=40),
    ]
    return _drawn(engine, samplings, default_seed=seed)


def _drawn(engine: LLMEngine, samplings: list[SamplingParams], default_seed: int) -> dict[str, list[int]]:
    """REQUESTS with `samplings` (their max_tokens, ignore_eos), the device's generator seeded with default_seed
    first, stepped to the end: each request's tokens."""
    for i, ((text, max_tokens), sampling) in enumerate(zip(REQUESTS.items(), samplings)):
        sampling = msgspec.structs.replace(sampling, max_tokens=max_tokens, ignore_eos=True)
        engine.add_request(f"r{i}", engine.tokenizer.encode(text), sampling)
    torch.manual_seed(default_seed)
    tokens: dict[str, list[int]] = {}
    while engine.has_unfinished:
        for output in engine.step():
            tokens.setdefault(output.request_id, []).extend(output.new_token_ids)
    return tokens


def test_sampled_decode_steps_are_launched_ahead(tiny):
    """Unseeded draws are chosen on the device, so their decode steps are launched ahead as greedy ones are:
    every request gets its max_tokens valid tokens, the greedy one those it gets in an all-greedy batch, and
    with the same seed the tokens are the waiting engine's (the same draws, in the same order, fed back on
    the device instead of from the host)."""
    greedy = _greedy(_engine(tiny))
    waiting = _graphed(tiny, launch_decode_ahead=False)
    expected = _sampled(waiting, seed=7)
    ahead = _graphed(tiny)
    sizes = _count_ahead_launches(ahead)
    tokens = _sampled(ahead, seed=7)
    vocab = ahead.model_config.vocab_size
    assert {rid: len(t) for rid, t in tokens.items()} == {f"r{i}": n for i, n in enumerate(REQUESTS.values())}
    assert all(0 <= token < vocab for t in tokens.values() for token in t)
    assert tokens["r2"] == greedy["r2"]
    assert tokens == expected
    assert tokens != _sampled(_engine(tiny), seed=8)  # the draws do depend on the generator
    assert len(sizes) >= 4 and max(sizes) == len(REQUESTS)
    assert not ahead.has_unfinished and ahead.kv_cache.num_requests_holding_blocks() == 0


def _seeded(engine: LLMEngine, default_seed: int) -> dict[str, list[int]]:
    """REQUESTS drawn with seeds of their own, which alone must decide their tokens (not `default_seed`)."""
    samplings = [SamplingParams(temperature=0.9, top_k=30, seed=100 + i) for i in range(len(REQUESTS))]
    return _drawn(engine, samplings, default_seed)


def test_seeded_decode_steps_are_launched_ahead_and_draw_what_a_waiting_engine_draws(tiny):
    """Seeded draws come from each request's own generator on the device path too: their steps are launched
    ahead, and the tokens are those of an engine that waits for every step (which depend on the seeds only)."""
    waiting = _graphed(tiny, launch_decode_ahead=False)
    expected = _seeded(waiting, default_seed=1)
    ahead = _graphed(tiny)
    sizes = _count_ahead_launches(ahead)
    assert _seeded(ahead, default_seed=2) == expected
    assert len(sizes) >= 4 and max(sizes) == len(REQUESTS)


def test_abort_while_a_step_is_launched_ahead(tiny):
    """A request aborted while the step after is already queued gets no more tokens; the others are unchanged."""
    expected = _greedy(_engine(tiny))
    engine = _graphed(tiny)
    sizes = _count_ahead_launches(engine)
    for i, (text, max_tokens) in enumerate(REQUESTS.items()):
        sampling = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
        engine.add_request(f"r{i}", engine.tokenizer.encode(text), sampling)
    tokens: dict[str, list[int]] = {}
    for _ in range(3):
        for output in engine.step():
            tokens.setdefault(output.request_id, []).extend(output.new_token_ids)
    assert engine._ahead is not None  # the next decode is queued
    aborted = engine.abort("r4")
    assert aborted.finished and aborted.finish_reason == "abort"
    tokens.setdefault("r4", []).extend(aborted.new_token_ids)
    while engine.has_unfinished:
        for output in engine.step():
            assert output.request_id != "r4"
            tokens.setdefault(output.request_id, []).extend(output.new_token_ids)
    assert sizes
    assert {rid: t for rid, t in tokens.items() if rid != "r4"} == {
        rid: t for rid, t in expected.items() if rid != "r4"
    }
    assert tokens["r4"] == expected["r4"][: len(tokens["r4"])] and len(tokens["r4"]) < len(expected["r4"])
    assert engine.kv_cache.num_requests_holding_blocks() == 0


def _arriving_greedy(engine: LLMEngine) -> dict[str, list[int]]:
    """REQUESTS greedy, the first two at once and one more before each of the next steps (arrivals while
    decode steps run): each request's tokens."""
    arrivals = [
        (f"r{i}", engine.tokenizer.encode(text), SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
        for i, (text, n) in enumerate(REQUESTS.items())
    ]
    for arrival in arrivals[:2]:
        engine.add_request(*arrival)
    arrivals = arrivals[2:]
    tokens: dict[str, list[int]] = {}
    while engine.has_unfinished or arrivals:
        if arrivals:
            engine.add_request(*arrivals.pop(0))
        for output in engine.step():
            tokens.setdefault(output.request_id, []).extend(output.new_token_ids)
    return tokens


def _count_mixed_ahead_launches(engine: LLMEngine) -> list[int]:
    """Record, for every step launched ahead that also admits waiting requests, how many it admits."""
    runner, admitted = engine.runner, []
    launch_ahead = runner.launch_ahead

    def counting(output, previous, pending):
        fresh = [item for item in output.scheduled if not item.token_on_device]
        if fresh:
            admitted.append(len(fresh))
        return launch_ahead(output, previous, pending)

    runner.launch_ahead = counting
    return admitted


@pytest.mark.parametrize("step_graphs", [False, True], ids=["eager", "step-graphs"])
def test_arrivals_join_steps_launched_ahead_with_the_same_tokens(tiny, step_graphs):
    """A request arriving while decode steps are launched ahead joins the next one behind its decodes (their
    tokens on the device, its prompt from the host) through the eager forward or the piecewise step graphs:
    every request gets the tokens of an engine that waits for each step's tokens, and arrivals no longer
    stop the chain of steps launched ahead."""
    waiting = _graphed(tiny, launch_decode_ahead=False)
    expected = _arriving_greedy(waiting)
    ahead = _graphed(tiny)
    if step_graphs:
        ahead.runner.use_step_graphs([16, 64], replay=CUDA)
    admitted = _count_mixed_ahead_launches(ahead)
    sizes = _count_ahead_launches(ahead)
    assert _arriving_greedy(ahead) == expected
    assert len(admitted) >= 2  # arrivals joined steps queued ahead
    not_admitting = _graphed(tiny, admit_waiting_ahead=False)
    fewer = _count_ahead_launches(not_admitting)
    assert _arriving_greedy(not_admitting) == expected
    assert len(sizes) > len(fewer)
    assert not ahead.has_unfinished and ahead.kv_cache.num_requests_holding_blocks() == 0
