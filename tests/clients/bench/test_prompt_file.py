"""The saved-prompts JSONL: what `bench llm --save-prompts` writes is what the engine benchmark reads."""

from __future__ import annotations

import json

import pytest

from modelgate.clients.bench.prompt_file import SavedPrompt, read_saved_prompts, write_saved_prompts
from modelgate.clients.bench.prompts import PromptError


def test_saved_prompts_read_back_with_their_lengths(tmp_path):
    path = tmp_path / "out" / "sent.jsonl"  # the folder is made
    write_saved_prompts(path, [SavedPrompt([1, 5, 6], 4, 0, "fixed", "ab"), SavedPrompt([1, 7], 2, 1, "mix")])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {"index": 0, "pattern": "fixed", "isl": 3, "osl": 4, "token_ids": [1, 5, 6], "text": "ab"}
    assert "text" not in rows[1]
    assert [(p.token_ids, p.isl, p.osl, p.index) for p in read_saved_prompts(path)] == [
        ([1, 5, 6], 3, 4, 0),
        ([1, 7], 2, 2, 1),
    ]


def test_a_file_of_only_token_ids_and_osl_is_enough(tmp_path):
    path = tmp_path / "minimal.jsonl"
    path.write_text('{"token_ids": [3, 4], "osl": 9}\n\n{"token_ids": [5], "osl": 1}\n')
    assert [(p.token_ids, p.osl) for p in read_saved_prompts(path)] == [([3, 4], 9), ([5], 1)]


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"token_ids": [3, 4]}', "expected a JSON object"),
        ('{"token_ids": "3 4", "osl": 2}', "expected a JSON object"),
        ("[1, 2]", "expected a JSON object"),
        ('{"token_ids": [], "osl": 2}', "at least one token id"),
        ('{"token_ids": [3], "osl": 0}', "osl of at least 1"),
    ],
)
def test_a_bad_line_is_named_by_file_and_number(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"token_ids": [3], "osl": 1}\n' + line + "\n")
    with pytest.raises(PromptError, match=f"bad.jsonl:2: .*{problem}"):
        read_saved_prompts(path)


def test_an_empty_or_missing_file_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(PromptError, match="holds no prompts"):
        read_saved_prompts(tmp_path / "empty.jsonl")
    with pytest.raises(PromptError, match="cannot read prompts file"):
        read_saved_prompts(tmp_path / "missing.jsonl")
