"""The sampler's device work (sample_on_device: device_sampling.py, device_penalties.py, logprob_rows.py): that
its filters, min_tokens masks and logprobs are the per-row reference's, that its draws follow the filtered
distribution, and that it reads nothing back."""

import math

import pytest
import torch

from modelgate.backends.llm.device_sampling import _keep_top_p, exponential_race, filtered_probabilities, row_settings
from modelgate.backends.llm.request import LLMRequest
from modelgate.backends.llm.sampler import Sampler, sample_on_device
from modelgate.backends.llm.sampling_params import SamplingParams
from tests.backends.llm.reference_sampler import ReferenceSampler, _filtered_probabilities

VOCAB = 16
EOS = 3

ON_DEVICE = {
    "greedy": SamplingParams(temperature=0),
    "greedy_seeded": SamplingParams(temperature=0, seed=5),  # greedy: the seed draws nothing
    "top_k_1_seeded": SamplingParams(temperature=0.9, top_k=1, seed=5),  # top_k 1 is greedy
    "temperature": SamplingParams(temperature=0.8),
    "filters": SamplingParams(temperature=1.3, top_k=6, top_p=0.9, min_p=0.02),
    "past_min_tokens": SamplingParams(temperature=1.0, min_tokens=4, stop_token_ids=[9]),  # 4 outputs already
    "seeded": SamplingParams(temperature=0.8, seed=5),  # its own generator: a draw queued for its row
    "logprobs": SamplingParams(temperature=0.8, logprobs=0),  # logprob_rows.py: device work as well
    "logprobs_greedy": SamplingParams(temperature=0, logprobs=2),
    "before_min_tokens": SamplingParams(temperature=0.8, min_tokens=5),  # 4 outputs: EOS masked on the device
    "repetition": SamplingParams(temperature=0.8, repetition_penalty=1.2),  # device_penalties.py
    "presence_greedy": SamplingParams(temperature=0, presence_penalty=0.5),
}

# Settings whose draws are counted; every filter alone and together, top-k on tied values, greedy rows among them.
COUNTED = [
    SamplingParams(temperature=0.7),
    SamplingParams(temperature=1.0, top_k=4),
    SamplingParams(temperature=1.5, top_p=0.6),
    SamplingParams(temperature=1.0, min_p=0.2),
    SamplingParams(temperature=1.2, top_k=7, top_p=0.8, min_p=0.05),
    SamplingParams(temperature=0),
    SamplingParams(temperature=2.0, top_k=3),
]


def _request(name: str, sampling: SamplingParams, num_outputs: int = 4) -> LLMRequest:
    request = LLMRequest(name, [5, 6, 7], sampling, eos_token_ids=(EOS,))
    request.output_token_ids.extend(range(10, 10 + num_outputs))
    return request


def _requests(settings: dict[str, SamplingParams]) -> list[LLMRequest]:
    return [_request(name, sampling) for name, sampling in settings.items()]


def _logits(num_rows: int, seed: int, vocab: int = VOCAB) -> torch.Tensor:
    """[num_rows, vocab] logits rounded to halves: many ties, at the k-th value and across top-p's boundary."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(num_rows, vocab, generator=generator) * 4).round() / 2


# Rows whose argmax is EOS or a stop token, under min_tokens or past it.
MIN_TOKENS = {
    "eos_masked": SamplingParams(temperature=0, min_tokens=6),  # 4 outputs: EOS is masked
    "eos_past_min": SamplingParams(temperature=0, min_tokens=4),  # 4 outputs: EOS may come
    "stop_masked": SamplingParams(temperature=0, min_tokens=9, stop_token_ids=[7, 11], ignore_eos=True),
    "ignore_eos": SamplingParams(temperature=0, min_tokens=9, ignore_eos=True),  # nothing to mask
    "drawn_masked": SamplingParams(temperature=0.7, top_k=2, seed=3, min_tokens=8),
}


def _favouring(requests: list[LLMRequest]) -> torch.Tensor:
    """Logits whose argmax is each request's first stop token (EOS where it has none), 11 second best."""
    logits = _logits(len(requests), seed=4)
    for row, request in enumerate(requests):
        stops = request.sampling.stop_token_ids or [EOS]
        logits[row, 11] = 20.0
        logits[row, stops[0]] = 30.0
    return logits


def test_stop_tokens_before_min_tokens_are_masked_on_the_device_as_on_the_general_path():
    requests = _requests(MIN_TOKENS)
    logits = _favouring(requests)
    before = logits.clone()
    ours = Sampler().sample_async(logits, requests)
    assert ours.device_tokens is not None
    tokens = ours.result().token_ids
    assert tokens == ReferenceSampler().sample(logits, requests).token_ids
    assert tokens["eos_masked"] != EOS and tokens["eos_past_min"] == EOS
    assert tokens["stop_masked"] not in (7, 11) and tokens["ignore_eos"] == EOS
    assert tokens["drawn_masked"] == 11  # top-2 of what is left: 11 holds nearly all of it
    assert torch.equal(logits, before)


def test_a_step_launched_ahead_counts_the_token_still_on_the_device():
    """`outputs_before` (ModelRunner.launch_ahead: a decode's input token is not on the request yet) decides
    the mask: 4 outputs on the host and 1 on its way make the 5 that min_tokens 5 asks for."""
    request = _request("ahead", SamplingParams(temperature=0, min_tokens=5))
    logits = _favouring([request])
    assert int(sample_on_device(logits, [request])[0]) != EOS  # 4 outputs: masked
    assert int(sample_on_device(logits, [request], outputs_before=[5])[0]) == EOS
    assert int(sample_on_device(logits, [request], outputs_before=[4])[0]) != EOS


def test_every_batch_keeps_its_tokens_on_the_device_for_a_step_launched_ahead():
    batch = _requests(ON_DEVICE)
    pending = Sampler().sample_async(_logits(len(batch), seed=1), batch)
    assert pending.device_tokens is not None and pending.device_tokens.shape == (len(batch),)
    tokens = pending.result().token_ids
    assert list(tokens) == list(ON_DEVICE)
    assert pending.device_tokens.tolist() == list(tokens.values())


def test_device_filters_equal_the_per_row_references():
    """The same float32 arithmetic: equal probabilities, row by row, ties at top-k and top-p included."""
    samplings = [s for s in COUNTED if not s.is_greedy] + [
        SamplingParams(temperature=0.3, top_k=VOCAB),  # k = vocab: no top-k, as the reference skips it
        SamplingParams(temperature=0.9, top_p=1.0, min_p=0.3),
        SamplingParams(temperature=1.0, top_k=2, top_p=0.3),
    ]
    samplings = samplings * 40
    logits = _logits(len(samplings), seed=2)
    requests = [_request(f"r{i}", s) for i, s in enumerate(samplings)]
    expected = _filtered_probabilities(logits, requests)
    got = filtered_probabilities(logits, row_settings(samplings, VOCAB, logits.device))
    assert torch.equal(got, expected)


def test_top_p_drops_a_token_whose_more_likely_tokens_hold_exactly_top_p():
    """Binary fractions make the boundary exact: before the third token, 0.5 + 0.25 = top_p, so it goes."""
    probs = torch.tensor([[0.25, 0.125, 0.5, 0.125], [0.25, 0.125, 0.5, 0.125]])  # [2, 4]
    _keep_top_p(probs, torch.tensor([[0.75], [math.inf]]))
    assert probs.tolist() == [[0.25, 0.0, 0.5, 0.0], [0.25, 0.125, 0.5, 0.125]]


# One row of logits with ties: sorted 3, 2.5, 2.5, 2, 2, 2, 1.5, ...: top-k 3, 4 and 7 keep 3, 6 and 7 tokens.
TIED = [2.0, -1.0, 3.0, 0.5, 2.5, -3.0, 2.0, 1.0, -0.5, 2.5, 0.0, 1.5, -1.0, 2.0, 0.5, -2.0]


def test_draws_follow_the_filtered_distribution():
    """Many rows per setting in one batch, a fixed seed: no filtered-out token is ever drawn, and each kept
    token's frequency is its filtered probability within 6 standard deviations of a frequency (the seed
    makes the draws the same on every run: the margin is for a future torch's different stream)."""
    num_draws = 20_000
    base = torch.tensor(TIED)  # [vocab]
    samplings = [s for s in COUNTED for _ in range(num_draws)]
    requests = [_request(f"r{i}", s) for i, s in enumerate(samplings)]
    logits = base.expand(len(samplings), VOCAB).contiguous()
    torch.manual_seed(1234)
    tokens = sample_on_device(logits, requests).view(len(COUNTED), num_draws)
    for position, sampling in enumerate(COUNTED):
        counts = torch.bincount(tokens[position], minlength=VOCAB).double()
        if sampling.is_greedy:
            assert counts[int(base.argmax())] == num_draws
            continue
        probs = _filtered_probabilities(base.unsqueeze(0), [_request("p", sampling)])[0].double()
        probs /= probs.sum()
        if sampling.top_k or sampling.top_p < 1.0 or sampling.min_p > 0.0:
            assert 1 < int((probs > 0).sum()) < VOCAB  # the filters cut something, and left a choice
        assert counts[probs == 0].sum() == 0, sampling
        tolerance = 6 * (probs * (1 - probs) / num_draws).sqrt() + 1e-9
        assert ((counts / num_draws - probs).abs() <= tolerance).all(), (sampling, counts / num_draws, probs)


def test_greedy_rows_in_a_sampled_batch_take_the_raw_argmax():
    samplings = [SamplingParams(temperature=0), SamplingParams(temperature=1.5, top_p=0.5)] * 16 + [
        SamplingParams(temperature=0.7, top_k=1)
    ]
    logits = torch.randn(len(samplings), 4096, generator=torch.Generator().manual_seed(4)) * 3
    before = logits.clone()
    requests = [_request(f"r{i}", s) for i, s in enumerate(samplings)]
    tokens = sample_on_device(logits, requests)
    greedy = torch.tensor([s.is_greedy for s in samplings])
    assert torch.equal(tokens[greedy], logits.argmax(dim=-1)[greedy])
    assert torch.equal(logits, before)
    assert not torch.equal(tokens[~greedy], logits.argmax(dim=-1)[~greedy])  # the others are draws


def _refuse(name):
    def refused(*args, **kwargs):
        raise AssertionError(f"the device path called Tensor.{name}")

    return refused


HOST_READS = ("tolist", "item", "nonzero", "__bool__", "__int__", "__float__", "__index__", "__setitem__")


def test_device_path_reads_nothing_back_to_the_host(monkeypatch):
    """On the CPU a host synchronization cannot be seen; what would cause one on CUDA can: reading a tensor's
    values (.tolist, .item, bool/int/float), nonzero, and index assignment (boolean masks call nonzero)."""
    samplings = list(ON_DEVICE.values()) + [SamplingParams(temperature=0.9, top_k=3, top_p=0.7, min_p=0.1)]
    requests = [_request(f"r{i}", s) for i, s in enumerate(samplings)]
    logits = _logits(len(requests) + 1, seed=5)
    with monkeypatch.context() as patched:
        for name in HOST_READS:
            patched.setattr(torch.Tensor, name, _refuse(name))
        pending = Sampler().sample_async(logits[:-1], requests)
        with pytest.raises(AssertionError, match="the device path called"):  # the check does see reads
            logits.tolist()
    assert len(pending.result().token_ids) == len(requests)


@pytest.mark.gpu
def test_device_path_queues_no_host_synchronization_on_cuda():
    """torch.cuda.set_sync_debug_mode("error") raises on any synchronizing CUDA call: the device path makes
    none (after a first call, which may initialize the generator and the pinned-memory pool); a read does."""
    samplings = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.8, top_k=50, top_p=0.95, min_p=0.05),
        SamplingParams(temperature=0.8, seed=7),  # its own generator, made by the first call
        SamplingParams(temperature=0.8, logprobs=5),
        SamplingParams(temperature=0, min_tokens=50),  # its EOS masked
        SamplingParams(temperature=0.7, repetition_penalty=1.3, frequency_penalty=0.5),  # its tokens on the device
    ]
    requests = [_request(f"r{i}", samplings[i % 6]) for i in range(18)]
    logits = torch.randn(len(requests), 128256, device="cuda")  # a Llama-3 vocabulary: chunked argmax
    sampler = Sampler()
    sampler.sample_async(logits, requests).result()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pending = sampler.sample_async(logits, requests)
        with pytest.raises(RuntimeError):
            logits[0, 0].item()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    result = pending.result()
    tokens = result.token_ids
    assert all(0 <= token < 128256 for token in tokens.values())
    assert tokens["r0"] == int(logits[0].argmax())
    assert set(result.logprobs) == {"r3", "r9", "r15"}
    assert tokens["r4"] != EOS
    expected = torch.log_softmax(logits[3], dim=-1)
    assert result.logprobs["r3"][tokens["r3"]] == pytest.approx(float(expected[tokens["r3"]]), abs=1e-5)


def test_noise_of_zero_cannot_pick_a_filtered_out_token(monkeypatch):
    """Exponential noise of exactly 0 (probability ~0, but representable) must not give 0 / 0 = NaN, which
    argmax would take for the largest value."""
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75]])

    def zeros(self, *args, **kwargs):
        return self.zero_()

    monkeypatch.setattr(torch.Tensor, "exponential_", zeros)
    assert int(exponential_race(probs)[0]) == 3  # every noise equal: the most likely token


def test_seeded_rows_on_the_device_draw_what_the_reference_draws_step_after_step():
    """Each seeded row from its own generator, as the per-row reference draws it (torch.multinomial with the
    request's generator): a seeded request's tokens depend on its seed alone, not on the unseeded rows beside
    it."""
    samplings = [
        SamplingParams(temperature=0.9, seed=11),
        SamplingParams(temperature=1.1, top_k=5),
        SamplingParams(temperature=1.3, top_p=0.8, seed=12),
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.7, min_p=0.05, seed=11),
    ]
    requests = [_request(f"r{i}", s) for i, s in enumerate(samplings)]
    seeded = [row for row, s in enumerate(samplings) if s.seed is not None]
    on_device, reference = Sampler(), ReferenceSampler()
    for step in range(6):
        logits = torch.randn(len(requests), 64, generator=torch.Generator().manual_seed(step)) * 2
        tokens = sample_on_device(logits, requests, on_device._generator)
        expected = reference._choose(logits.clone(), requests)
        assert tokens[seeded].tolist() == expected[seeded].tolist(), step


def test_seeded_rows_need_their_generators():
    request = _request("s", SamplingParams(temperature=0.8, seed=3))
    with pytest.raises(ValueError, match="generator_for"):
        sample_on_device(_logits(1, seed=2), [request])


def test_device_logprobs_equal_the_references():
    """Logprobs computed on the device (logprob_rows.py, copied with the tokens) are the per-row reference's:
    the raw distribution at the chosen token and each row's n most likely, only for the rows that asked; seeded
    and greedy rows choose the same tokens in both, so their dicts compare whole."""
    samplings = [
        SamplingParams(temperature=0, logprobs=3),
        SamplingParams(temperature=0.9, seed=21, logprobs=0),
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.2, top_k=5, seed=22, logprobs=5),
        SamplingParams(temperature=0.7, seed=23),
        SamplingParams(temperature=0, logprobs=1),
    ]
    requests = [_request(f"r{i}", s) for i, s in enumerate(samplings)]
    logits = _logits(len(requests), seed=9)
    before = logits.clone()
    on_device, reference = Sampler(), ReferenceSampler()
    for step in range(3):  # the seeded generators advance alike in both
        ours = on_device.sample(logits, requests)
        theirs = reference.sample(logits, requests)
        assert ours.token_ids == theirs.token_ids, step
        assert set(ours.logprobs) == {"r0", "r1", "r3", "r5"}
        for request_id, values in theirs.logprobs.items():
            assert ours.logprobs[request_id] == pytest.approx(values), (step, request_id)
    assert len(ours.logprobs["r3"]) in (5, 6)  # its top 5, and the chosen token where it is not among them
    assert torch.equal(logits, before)
