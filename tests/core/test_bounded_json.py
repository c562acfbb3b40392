"""loads_bounded: JSON parsed as json.loads does, nesting past MAX_JSON_DEPTH refused, never a RecursionError."""

import json

import pytest

from modelgate.core.bounded_json import MAX_JSON_DEPTH, loads_bounded
from modelgate.core.errors import InvalidArgumentError


def arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


def objects(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("text", [arrays(MAX_JSON_DEPTH), objects(MAX_JSON_DEPTH), "5", '"[[[["', "[]", "{}"])
def test_up_to_the_bound_parses_as_json_loads(text):
    assert loads_bounded(text) == json.loads(text)
    assert loads_bounded(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        arrays(MAX_JSON_DEPTH + 1),
        objects(MAX_JSON_DEPTH + 1),
        arrays(100_000),
        objects(100_000),
        '[1, {"a": [2, ' + arrays(MAX_JSON_DEPTH - 2) + "]}]",  # deep on a late branch
    ],
)
def test_past_the_bound_is_refused_naming_it(text):
    with pytest.raises(InvalidArgumentError, match=f"request body nests .* more than {MAX_JSON_DEPTH} levels deep"):
        loads_bounded(text)


def test_brackets_inside_strings_are_not_nesting():
    text = json.dumps({"s": "[" * 1000, "t": ["{" * 1000]})
    assert loads_bounded(text) == json.loads(text)


def test_many_shallow_containers_parse():
    """More `[` than the bound, none deeper than 2: walked after parsing, and accepted."""
    text = json.dumps([[i, i] for i in range(10_000)])
    assert loads_bounded(text) == json.loads(text)


def test_invalid_json_names_what_was_parsed():
    with pytest.raises(InvalidArgumentError, match="input 'x' is not valid JSON"):
        loads_bounded(b"{nope", "input 'x'")
    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        loads_bounded(b'{"a": "\xff"}')
