"""The batched sampler: its greedy fast path and its general path pick what the per-row reference picks."""

import pytest
import torch

from modelgate.backends.llm import device_penalties
from modelgate.backends.llm.request import LLMRequest
from modelgate.backends.llm.sampler import Sampler, chunked_argmax, greedy_tokens
from modelgate.backends.llm.sampling_params import SamplingParams
from tests.backends.llm.reference_sampler import ReferenceSampler

VOCAB = 64
EOS = 3


def _logits(num_rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3  # [num_rows, vocab]


def _request(index: int, sampling: SamplingParams, num_outputs: int = 4) -> LLMRequest:
    request = LLMRequest(f"r{index}", [5, 6, 7, index % VOCAB], sampling, eos_token_ids=(EOS,))
    request.output_token_ids.extend((index * 7 + k) % VOCAB for k in range(num_outputs))
    return request


GREEDY = SamplingParams(temperature=0)
MIXED = [
    GREEDY,
    SamplingParams(temperature=0.8, seed=11),
    SamplingParams(temperature=1.0, top_k=5, seed=12),
    SamplingParams(temperature=0.7, top_p=0.8, seed=13),
    SamplingParams(temperature=1.2, min_p=0.05, top_k=20, top_p=0.9, seed=14),
    SamplingParams(temperature=0, repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.2),
    SamplingParams(temperature=0.9, repetition_penalty=1.2, seed=15),
    SamplingParams(temperature=0, min_tokens=10, stop_token_ids=[9]),
    SamplingParams(temperature=0, logprobs=3),
    SamplingParams(temperature=1.0, seed=16, logprobs=0),
    SamplingParams(temperature=0.5, top_k=1),  # top_k 1 is greedy
    SamplingParams(temperature=1.0, top_p=0.5, seed=17, logprobs=5),
]


def test_all_greedy_batch_is_one_argmax_and_leaves_the_logits_alone():
    logits = _logits(37)
    before = logits.clone()
    requests = [_request(i, GREEDY) for i in range(37)]
    out = Sampler().sample(logits, requests)
    assert out.token_ids == {f"r{i}": int(t) for i, t in enumerate(logits.argmax(dim=-1))}
    assert out.logprobs == {}
    assert torch.equal(logits, before)


@pytest.mark.parametrize("num_outputs", [0, 4])
def test_mixed_batch_equals_the_per_row_reference(num_outputs):
    logits = _logits(len(MIXED), seed=num_outputs)
    before = logits.clone()
    requests = [_request(i, s, num_outputs) for i, s in enumerate(MIXED)]
    sampler, reference = Sampler(), ReferenceSampler()
    for _ in range(3):  # seeded generators advance step after step in both
        ours, theirs = sampler.sample(logits, requests), reference.sample(logits, requests)
        assert ours.token_ids == theirs.token_ids
        assert ours.logprobs.keys() == theirs.logprobs.keys()
        for request_id, values in theirs.logprobs.items():
            assert ours.logprobs[request_id] == pytest.approx(values)
    assert torch.equal(logits, before)


def test_greedy_rows_give_the_same_token_alone_and_in_a_mixed_batch():
    logits = _logits(len(MIXED), seed=3)
    requests = [_request(i, s) for i, s in enumerate(MIXED)]
    mixed = Sampler().sample(logits, requests).token_ids
    greedy_rows = [i for i, s in enumerate(MIXED) if s.is_greedy and not s.uses_penalties and s.min_tokens == 0]
    assert len(greedy_rows) >= 2
    alone = Sampler().sample(logits[greedy_rows], [requests[i] for i in greedy_rows]).token_ids
    assert alone == {requests[i].request_id: mixed[requests[i].request_id] for i in greedy_rows}


# Penalized, some with min_tokens or seeds, greedy and drawn: their tokens become their history step by step.
PENALIZED = [
    SamplingParams(temperature=0, repetition_penalty=1.8),
    SamplingParams(temperature=0, presence_penalty=1.5, frequency_penalty=0.7),
    SamplingParams(temperature=0.9, seed=41, repetition_penalty=1.3, frequency_penalty=0.4),
    SamplingParams(temperature=0, repetition_penalty=0.7, presence_penalty=-0.5, min_tokens=3),
    GREEDY,
    SamplingParams(temperature=1.1, top_k=8, seed=42, presence_penalty=2.0, logprobs=2),
]


@pytest.mark.parametrize("chunk_rows", [32, 2])
def test_penalties_count_each_token_chosen_on_the_device_step_after_step(chunk_rows, monkeypatch):
    """The device keeps each penalized request's tokens (device_penalties.py): after each step the requests
    take their tokens, as the engine's do, and the next step's penalties count them as the host reference
    does. Requests finish and new ones take their rows of the history; the logits stay as they were. With
    chunks of 2 rows, the penalized rows are computed in three chunks."""
    monkeypatch.setattr(device_penalties, "CHUNK_ROWS", chunk_rows)
    sampler, reference = Sampler(), ReferenceSampler()
    requests = [_request(i, s, num_outputs=0) for i, s in enumerate(PENALIZED)]
    penalized_away = 0  # steps where a penalized greedy row did not take its raw argmax
    for step in range(12):
        logits = torch.randn(len(requests), VOCAB, generator=torch.Generator().manual_seed(step))
        logits[:, :8] += 4.0  # a few likely tokens: the penalties have repeats to count
        before = logits.clone()
        ours, theirs = sampler.sample(logits, requests), reference.sample(logits, requests)
        assert ours.token_ids == theirs.token_ids, step
        for request_id, values in theirs.logprobs.items():
            assert ours.logprobs[request_id] == pytest.approx(values)
        assert torch.equal(logits, before)
        penalized_away += sum(ours.token_ids[requests[i].request_id] != int(logits[i].argmax()) for i in (0, 1))
        for request in requests:
            request.output_token_ids.append(ours.token_ids[request.request_id])
        if step == 5:  # the first two finish; two new ones (new ids, new seeds) may take their rows
            for request in requests[:2]:
                sampler.forget(request.request_id)
                reference.forget(request.request_id)
            requests[:2] = [_request(10 + i, s, num_outputs=0) for i, s in enumerate(PENALIZED[:2])]
    assert penalized_away > 0  # the histories were counted: the penalties moved some choices


def test_penalty_histories_grow_past_their_first_size():
    """More penalized requests than the history's first rows (8) and prompts longer than its first width (256):
    the buffer grows, keeping what it held, and the tokens stay the reference's."""
    generator = torch.Generator().manual_seed(3)
    sampler, reference = Sampler(), ReferenceSampler()
    requests = []
    for i in range(20):
        prompt = torch.randint(0, VOCAB, (100 + 20 * i,), generator=generator).tolist()  # up to 480 tokens
        sampling = SamplingParams(temperature=0, repetition_penalty=1.5, frequency_penalty=0.3 * (i % 3))
        requests.append(LLMRequest(f"g{i}", prompt, sampling, eos_token_ids=(EOS,)))
    for step in range(4):
        batch = requests[: 6 + 5 * step]  # more requests join as the steps go
        logits = torch.randn(len(batch), VOCAB, generator=generator) * 3
        ours, theirs = sampler.sample(logits, batch), reference.sample(logits, batch)
        assert ours.token_ids == theirs.token_ids, step
        for request in batch:
            request.output_token_ids.append(ours.token_ids[request.request_id])
    history = sampler._penalties._tokens
    assert history.shape[0] >= 20 and history.shape[1] >= 480


def test_min_tokens_keeps_a_greedy_request_off_its_stop_tokens():
    logits = _logits(2)
    logits[:, EOS] = 100.0  # EOS is every row's argmax
    held = _request(0, SamplingParams(temperature=0, min_tokens=6), num_outputs=2)
    free = _request(1, SamplingParams(temperature=0, min_tokens=6), num_outputs=6)
    out = Sampler().sample(logits, [held, free]).token_ids
    masked = logits[0].clone()
    masked[EOS] = float("-inf")
    assert out["r0"] == int(masked.argmax()) and out["r1"] == EOS


def test_logprobs_are_the_raw_distribution_at_the_chosen_and_top_tokens():
    logits = _logits(3, seed=5)
    requests = [
        _request(0, SamplingParams(temperature=0, logprobs=4)),
        _request(1, GREEDY),
        _request(2, SamplingParams(temperature=1.0, seed=1, logprobs=0, repetition_penalty=1.5)),
    ]
    out = Sampler().sample(logits, requests)
    assert set(out.logprobs) == {"r0", "r2"}
    expected = torch.log_softmax(logits, dim=-1)
    top = expected[0].topk(4)
    assert out.logprobs["r0"] == pytest.approx({int(t): float(v) for t, v in zip(top.indices, top.values)})
    chosen = out.token_ids["r2"]
    assert out.logprobs["r2"] == pytest.approx({chosen: float(expected[2, chosen])})


def test_unseeded_draws_stay_inside_each_rows_filter():
    logits = _logits(64, seed=7)
    requests = [_request(i, SamplingParams(temperature=1.0, top_k=3)) for i in range(64)]
    out = Sampler().sample(logits, requests).token_ids
    for i, request in enumerate(requests):
        assert out[request.request_id] in logits[i].topk(3).indices.tolist()


@pytest.mark.parametrize("chunks", [1, 4, 128])
def test_chunked_argmax_is_argmax_with_its_first_index_on_ties(chunks):
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(5, 1024, generator=generator)
    logits[1, [7, 300, 900]] = 50.0  # a tie across chunks: the first index wins
    logits[2, [513, 514]] = 60.0  # a tie inside one chunk
    logits[3] = float("-inf")  # a fully masked row: index 0, as argmax gives
    logits[3, 1023] = float("-inf")
    expected = logits.argmax(dim=-1)
    assert expected[1] == 7 and expected[2] == 513
    assert torch.equal(chunked_argmax(logits, chunks), expected)


def _check_greedy_tokens(device: str) -> None:
    generator = torch.Generator().manual_seed(12)
    for rows, vocab in ((1, 128256), (64, 128256), (3, 32000), (2, 1000)):
        logits = torch.randn(rows, vocab, generator=generator).to(device)
        logits[0, [vocab // 3, vocab - 1]] = 9.0
        assert torch.equal(greedy_tokens(logits), logits.argmax(dim=-1))


def test_greedy_tokens_equal_argmax_on_the_cpu():
    _check_greedy_tokens("cpu")


@pytest.mark.gpu
def test_greedy_tokens_equal_argmax_on_cuda():
    """On CUDA a 128K vocabulary takes the chunked path (128 chunks of 1002)."""
    _check_greedy_tokens("cuda")
