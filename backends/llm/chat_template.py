"""Chat templates from tokenizer_config.json, rendered in a jinja2 sandbox (templates come with models)."""

from __future__ import annotations

import json
from functools import lru_cache

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    pass


def render_chat(
    template: str | None,
    messages: list[dict],
    bos_token: str | None,
    eos_token: str | None,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text for `messages`; raises ChatTemplateError if the model has no template."""
    if not template:
        raise ChatTemplateError("this model has no chat template (tokenizer_config.json 'chat_template')")
    try:
        return _compiled(template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token or "",
            eos_token=eos_token or "",
        )
    except TemplateError as exc:
        raise ChatTemplateError(f"the chat template failed: {exc}") from None


def _raise(message: str):
    raise TemplateError(message)


@lru_cache(maxsize=8)
def _compiled(template: str):
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = _raise
    environment.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    return environment.from_string(template)
