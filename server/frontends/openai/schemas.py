"""OpenAI request bodies. Unknown fields are errors (as OpenAI's API answers them).

vLLM's sampling extensions (top_k, min_p, repetition_penalty, min_tokens, ignore_eos,
stop_token_ids, include_stop_str_in_output) are accepted too.

Every list a client controls is bounded here or in the LLM backend's sampling parameters (stop strings and
stop token ids): each choice of each prompt is one engine request, so `n` and the number of prompts are the
work one HTTP request may queue.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 16  # OpenAI allows 128, vLLM 16384 (VLLM_MAX_N_SEQUENCES)
MAX_PROMPTS = 256  # prompts in one /v1/completions request (vLLM: no bound)
MAX_CHOICES = 256  # prompts x n: the engine requests one HTTP request starts


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _SamplingFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    ignore_eos: bool | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool | None = None
    logit_bias: dict | None = None

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value):
        if value:
            raise ValueError("logit_bias is not supported (only an empty object or null is accepted)")
        return value

    def sampling_fields(self, max_tokens: int | None, logprobs: int | None) -> dict:
        """The sampling fields this request sets, as request parameters; the LLM backend checks their values."""
        names = (
            "temperature",
            "top_p",
            "stop",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "top_k",
            "min_p",
            "repetition_penalty",
            "min_tokens",
            "ignore_eos",
            "stop_token_ids",
            "include_stop_str_in_output",
        )
        fields = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if max_tokens is not None:
            fields["max_tokens"] = max_tokens
        if logprobs is not None:
            fields["logprobs"] = logprobs
        return fields


# A prompt of token ids (OpenAI's `prompt: [ids]` and `[[ids], ...]`): integers only, never booleans or strings
# of digits, within INT32 (the LLM backend's input_ids), which checks them against the vocabulary and the context
# (prompt_token_ids.py).
TokenIds = list[Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)]]


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | TokenIds | list[TokenIds]
    max_tokens: int | None = 16
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, value):
        prompts = value if isinstance(value, list) and value and not isinstance(value[0], int) else [value]
        if not value or any(len(p) == 0 for p in prompts):
            raise ValueError("prompt must be a non-empty string or list of token ids (or a list of them)")
        return value

    @property
    def prompts(self) -> list[str | list[int]]:
        """Each prompt: a string or a list of token ids."""
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]
        return self.prompt

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value):
        if value:
            raise ValueError("suffix is not supported")
        return value

    @field_validator("prompt")
    @classmethod
    def _bounded_prompt_count(cls, value):
        if isinstance(value, list) and value and not isinstance(value[0], int) and len(value) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request are allowed, got {len(value)}")
        return value

    @model_validator(mode="after")
    def _bounded_choices(self):
        num_prompts = len(self.prompts)
        if num_prompts * self.n > MAX_CHOICES:
            raise ValueError(
                f"prompt, n: {num_prompts} prompts x n={self.n} choices is {num_prompts * self.n}; "
                f"at most {MAX_CHOICES} choices per request are allowed"
            )
        if self.echo and any(not isinstance(prompt, str) for prompt in self.prompts):
            raise ValueError("echo: not supported for prompts given as token ids; send their text to have it echoed")
        # modelgate returns every choice it generates and ranks none: best_of means n choices, no more
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError(
                f"best_of: must equal n ({self.n}), got {self.best_of}; choices are not ranked, so no "
                "candidates beyond n are generated"
            )
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise ValueError(f"message content part of type '{part.get('type')}' is not supported; only 'text'")
            parts.append(part.get("text", ""))
        return "".join(parts)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
