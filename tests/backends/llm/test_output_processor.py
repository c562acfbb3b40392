"""Output processing keeps no full text, yet streams exactly what the full-text algorithm streams."""

import random

import pytest

from modelgate.backends.llm.output_processor import OutputProcessor
from modelgate.backends.llm.request import LLMRequest, RequestStatus
from modelgate.backends.llm.sampling_params import SamplingParams
from modelgate.backends.llm.tokenizer import TextTokenizer
from tests.backends.llm.tiny_checkpoint import make_tokenizer

TEXT = "the quick brown fox, héllo wörld café naïve 日本語 テキスト jumps over the lazy dog " * 3


class ReferenceText:
    """The straightforward algorithm: window-decoding detokenizer, the whole text kept, stops searched in it."""

    def __init__(self, tokenizer: TextTokenizer, prompt: list[int], sampling: SamplingParams):
        self.decode = tokenizer.decode
        self.ids, self.text, self.emitted = list(prompt[-5:]), "", 0
        self.prefix, self.read = 0, len(self.ids)
        self.stops, self.include = sampling.stop, sampling.include_stop_str_in_output
        self.hold_back = max((len(s) for s in self.stops), default=1) - 1

    def _detokenize(self, flush: bool) -> None:
        prefix, full = self.decode(self.ids[self.prefix : self.read]), self.decode(self.ids[self.prefix :])
        if flush:
            self.text += full[len(prefix) :] if full.startswith(prefix) else ""
            self.prefix = self.read = len(self.ids)
        elif len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.text += full[len(prefix) :]
            self.prefix, self.read = max(self.read, len(self.ids) - 5), len(self.ids)

    def process(self, new_ids: list[int], finished: bool) -> tuple[str, bool]:
        self.ids.extend(new_ids)
        self._detokenize(flush=False)
        if finished:
            self._detokenize(flush=True)
        text, stopped = self.text, False
        search_from = max(0, self.emitted - self.hold_back)
        hits = [(i, s) for s in self.stops if (i := text.find(s, search_from)) >= 0]
        if hits:
            index, stop = min(hits)
            text, stopped = text[: index + len(stop) if self.include else index], True
        end = len(text) if finished or stopped else max(self.emitted, len(text) - self.hold_back)
        new_text, self.emitted = text[self.emitted : end], end
        return new_text, stopped


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    make_tokenizer(directory)
    return TextTokenizer(directory)


def _streams(tokenizer, tokens, sampling, chunk):
    """Feed `tokens` `chunk` at a time to both; returns both lists of (new_text, stopped, finish_reason)."""
    processor = OutputProcessor(tokenizer)
    prompt = tokenizer.encode("héllo")
    request = LLMRequest("x", list(prompt), sampling)
    request.status = RequestStatus.RUNNING
    processor.add(request)
    reference = ReferenceText(tokenizer, prompt, sampling)
    ours, theirs = [], []
    for start in range(0, len(tokens), chunk):
        request.output_token_ids.extend(tokens[start : start + chunk])
        if start + chunk >= len(tokens):
            request.status = RequestStatus.FINISHED_LENGTH
        output, stopped = processor.process(request)
        assert output.new_token_ids == tokens[start : start + chunk]
        ours.append((output.new_text, stopped, output.finish_reason))
        new_text, ref_stopped = reference.process(tokens[start : start + chunk], request.is_finished)
        reason = "stop" if ref_stopped else ("length" if request.is_finished else None)
        theirs.append((new_text, ref_stopped, reason))
        if output.finished:
            break
    return ours, theirs


def _token_cases(tokenizer):
    rng = random.Random(3)
    vocab = tokenizer.vocab_size
    return [
        tokenizer.encode(TEXT, add_special_tokens=False),
        [rng.randrange(vocab) for _ in range(120)],
    ]  # random bytes: broken UTF-8 is held back


@pytest.mark.parametrize("chunk", [1, 3])
def test_text_without_stop_strings_equals_the_reference_and_the_whole_decode(tokenizer, chunk):
    for tokens in _token_cases(tokenizer):
        ours, theirs = _streams(tokenizer, tokens, SamplingParams(max_tokens=1000), chunk)
        assert ours == theirs
        if tokens == _token_cases(tokenizer)[0]:
            assert "".join(text for text, _, _ in ours) == tokenizer.decode(tokens)


@pytest.mark.parametrize("include", [False, True])
@pytest.mark.parametrize("chunk", [1, 3])
def test_stop_strings_stream_and_stop_as_the_reference(tokenizer, include, chunk):
    tokens = _token_cases(tokenizer)[0]
    text = tokenizer.decode(tokens)
    rng = random.Random(chunk)
    stop_sets = [
        ["jumps"],
        ["wörld", "zzz"],
        ["日本", "naïve café"],
        ["the lazy dog the"],
        ["never there"],
        [text[rng.randrange(len(text) - 8) :][: rng.randrange(1, 8)] for _ in range(3)],
    ]
    for stops in stop_sets:
        sampling = SamplingParams(max_tokens=1000, stop=stops, include_stop_str_in_output=include)
        ours, theirs = _streams(tokenizer, tokens, sampling, chunk)
        assert ours == theirs, stops
        sent = "".join(t for t, _, _ in ours)
        found = [text.find(s) for s in stops if s in text]
        if found:
            assert ours[-1][1] and ours[-1][2] == "stop"
            assert sent.startswith(text[: min(found)]) and len(sent) <= len(text)


def test_abort_flushes_what_was_held_back(tokenizer):
    processor = OutputProcessor(tokenizer)
    request = LLMRequest("a", tokenizer.encode("x"), SamplingParams(stop=["never there"]))
    processor.add(request)
    request.output_token_ids.extend(tokenizer.encode(" quick brown", add_special_tokens=False))
    first, _ = processor.process(request)
    request.status = RequestStatus.FINISHED_ABORTED
    last, stopped = processor.process(request)
    assert not stopped and last.finished and last.finish_reason == "abort" and last.new_token_ids == []
    assert first.new_text + last.new_text == " quick brown"
