"""The prompts a benchmark sent, saved as JSONL so that another benchmark can send the same requests.

One line per request, in request order:

    {"index": 0, "pattern": "fixed", "isl": 128, "osl": 64, "token_ids": [1, 518, ...], "text": "..."}

`token_ids` is the text sent as the model's tokenizer encodes it, special tokens (BOS) included,
so `isl` == len(token_ids) is the ISL the server counted; `osl` is the output length asked for
(max_tokens with ignore_eos). A reader needs only `token_ids` and `osl`.
`modelgate bench llm --save-prompts` writes it; benchmarks/llm_engine_vs_transformers.py
`--prompts-file` replays it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from modelgate.clients.bench.prompt import PromptError


@dataclass(frozen=True)
class SavedPrompt:
    token_ids: list[int]
    osl: int
    index: int = 0
    pattern: str = ""
    text: str | None = None

    @property
    def isl(self) -> int:
        return len(self.token_ids)


def write_saved_prompts(path: Path, prompts: Iterable[SavedPrompt]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as file:
        for prompt in prompts:
            row = {"index": prompt.index, "pattern": prompt.pattern, "isl": prompt.isl, "osl": prompt.osl}
            row["token_ids"] = prompt.token_ids
            if prompt.text is not None:
                row["text"] = prompt.text
            file.write(json.dumps(row) + "\n")


def read_saved_prompts(path: Path) -> list[SavedPrompt]:
    """Every line's prompt; PromptError names the file and line of one that is not a saved prompt."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise PromptError(f"cannot read prompts file {path}: {exc}") from None
    prompts = [_parse(line, f"{path}:{number}") for number, line in enumerate(lines, 1) if line.strip()]
    if not prompts:
        raise PromptError(f"prompts file {path} holds no prompts")
    return prompts


def _parse(line: str, where: str) -> SavedPrompt:
    try:
        row = json.loads(line)
        prompt = SavedPrompt(
            [int(i) for i in row["token_ids"]], int(row["osl"]), int(row.get("index", 0)), str(row.get("pattern", ""))
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PromptError(f"{where}: expected a JSON object with a 'token_ids' list and an integer 'osl'") from None
    if not prompt.token_ids or prompt.osl < 1:
        raise PromptError(f"{where}: a prompt needs at least one token id and an osl of at least 1")
    return prompt
