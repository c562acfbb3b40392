"""TextTokenizer.encode (a batch encode without offsets, the GIL released) gives the plain encode's ids."""

import pytest

from modelgate.backends.llm.tokenizer import TextTokenizer
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> TextTokenizer:
    return TextTokenizer(make_tiny_checkpoint(tmp_path_factory.mktemp("tokenizer") / "tiny" / "1"))


@pytest.mark.parametrize("add_special_tokens", [True, False])
@pytest.mark.parametrize("text", ["", "a", "the quick brown fox, café naïve " * 300, "日本語 🙂 tabs\tand\nlines"])
def test_ids_match_the_plain_encode(tokenizer, text, add_special_tokens):
    expected = tokenizer.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
    assert tokenizer.encode(text, add_special_tokens=add_special_tokens) == expected
