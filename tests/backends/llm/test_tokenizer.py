"""TextTokenizer: long texts go through the GIL-releasing path and give the same ids as the short one."""

import pytest

from modelgate.backends.llm.tokenizer import _GIL_FREE_ENCODE_CHARS, TextTokenizer
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> TextTokenizer:
    return TextTokenizer(make_tiny_checkpoint(tmp_path_factory.mktemp("tokenizer") / "tiny" / "1"))


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_long_text_ids_match_the_plain_encode(tokenizer, add_special_tokens):
    text = "the quick brown fox, café naïve " * (_GIL_FREE_ENCODE_CHARS // 10)
    assert len(text) > _GIL_FREE_ENCODE_CHARS
    expected = tokenizer.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
    assert tokenizer.encode(text, add_special_tokens=add_special_tokens) == expected
