"""Random-token prompts (trtllm-bench style): exact lengths as the server counts, nothing shared unless a
prefix is asked for, ordinary vocabulary only."""

from __future__ import annotations

import itertools
import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from modelgate.clients.bench.llm_settings import PromptSettings
from modelgate.clients.bench.prompt_corpus import CORPUS
from modelgate.clients.bench.prompts import PromptBuilder, PromptError
from tests.server_harness import EXAMPLE_REPOSITORY

TOKENIZER_DIR = EXAMPLE_REPOSITORY / "tiny_llm" / "1"
BOS = 1  # tiny_llm's <s>; its post-processor puts it first
TINY_SPECIAL_IDS = {0, 1, 2}  # <unk>, <s>, </s>


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))


def builder(prefix_len: int = 0, seed: int = 0, **settings) -> PromptBuilder:
    return PromptBuilder(TOKENIZER_DIR, seed, PromptSettings(prefix_len=prefix_len, **settings))


def common_run(a: list[int], b: list[int]) -> int:
    """How many leading ids two lists share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_a_tokenizer_makes_random_tokens_the_default_source():
    assert builder().source == "random-tokens"
    assert PromptBuilder(None).source == "corpus"
    assert builder(source="corpus").source == "corpus"


@pytest.mark.parametrize("prefix_len", [0, 8])
def test_prompts_re_encode_to_exactly_the_wanted_length(tokenizer, prefix_len):
    prompts = builder(prefix_len, seed=3)
    for isl in (prefix_len + 2, prefix_len + 3, 17 + prefix_len, 100, 255, 1000):
        for _ in range(4):
            prompt = prompts.build(isl)
            encoded = tokenizer.encode(prompt.text).ids  # as the server counts: BOS included
            assert prompt.num_tokens == isl == len(encoded)
            assert prompt.token_ids == encoded and encoded[0] == BOS
            assert not TINY_SPECIAL_IDS & set(encoded[1:])  # no special token drawn into the text


def test_without_a_prefix_prompts_share_no_leading_ids_beyond_chance():
    prompts = builder(0, seed=5)
    ids = [prompts.build(48).token_ids[1:] for _ in range(20)]  # after BOS
    # 190 pairs over ~900 drawable ids: a shared first id happens by chance now and then, two in a row hardly.
    assert max(common_run(a, b) for a, b in itertools.combinations(ids, 2)) <= 2
    assert len({prompt[0] for prompt in ids}) >= 18
    assert len({tuple(prompt[:3]) for prompt in ids}) == 20


def test_a_shared_prefix_opens_every_prompt_and_the_rest_differs():
    prompts = builder(8, seed=5)
    ids = [prompts.build(isl).token_ids for isl in (24, 24, 40, 64, 24, 33)]
    prefix = ids[0][1:9]
    assert all(prompt[:9] == [BOS, *prefix] for prompt in ids)
    assert len({prompt[9] for prompt in ids}) >= 5  # own ids start right after the prefix
    assert max(common_run(a[9:], b[9:]) for a, b in itertools.combinations(ids, 2)) <= 2


def test_a_prefix_that_leaves_no_own_token_is_an_error():
    prompts = builder(8)
    assert prompts.build(10).num_tokens == 10  # BOS + 8 shared + 1 own
    with pytest.raises(PromptError, match="ISL 9 leaves no token of the prompt's own.*at least 10"):
        prompts.build(9)


def test_without_a_prefix_an_isl_below_bos_plus_one_gets_one_own_token():
    assert builder(0).build(1).num_tokens == 2  # as the corpus prompts: ISL 1 cannot be built with BOS


def test_random_tokens_without_a_tokenizer_is_an_error():
    with pytest.raises(PromptError, match="need a tokenizer"):
        PromptBuilder(None, 0, PromptSettings(source="random-tokens"))


def test_corpus_prompts_stay_available_with_a_tokenizer(tokenizer):
    prompt = builder(source="corpus", seed=2).build(40)
    assert len(tokenizer.encode(prompt.text).ids) == 40 == len(prompt.token_ids)
    assert " ".join(prompt.text.split()[1:-1]) in " ".join(CORPUS.split())  # a cut of the corpus


def test_special_tokens_named_by_tokenizer_config_are_never_drawn(tmp_path):
    """A word-level vocabulary like the engine benchmark's: t0-t2 are only special in tokenizer_config.json."""
    word_level = Tokenizer(models.WordLevel({f"t{i}": i for i in range(12)}, unk_token="t2"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "t0", "eos_token": {"content": "t1"}}))
    prompts = PromptBuilder(tmp_path, 0, PromptSettings(prefix_len=3))
    drawn = {i for _ in range(50) for i in prompts.build(10).token_ids}
    assert drawn == set(range(3, 12))  # every ordinary id, none of BOS, EOS, UNK
