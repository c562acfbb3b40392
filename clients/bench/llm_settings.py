"""Settings of `modelgate bench llm`: where to send, what to send, how hard, where to write."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

Protocol = Literal["generate_stream", "grpc", "openai-chat", "openai-completions"]
PatternKind = Literal[
    "fixed",
    "long-in-short-out",
    "long-in-long-out",
    "short-in-long-out",
    "short-in-short-out",
    "mix",
    "normal",
    "uniform",
    "trace",
]
PromptSource = Literal["random-tokens", "corpus"]


class LengthSettings(BaseModel):
    """Input/output lengths (tokens) of the request patterns.

    fixed: isl/osl. The four classes: short_* or long_* per side. mix: the four classes drawn with
    `mix_weights`. normal: mean isl/osl with *_stddev. uniform: [*_min, *_max]. trace: a JSONL file
    with `isl` and `osl` per line, replayed in order (cycled). Every sampled length is at least 1, and
    with `max_model_len` set a request is shortened (input first) so that isl + osl fits.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: PatternKind = "fixed"
    isl: int = Field(128, ge=1)
    osl: int = Field(128, ge=1)
    short_isl: int = Field(128, ge=1)
    long_isl: int = Field(2048, ge=1)
    short_osl: int = Field(128, ge=1)
    long_osl: int = Field(1024, ge=1)
    mix_weights: dict[str, float] = Field(default_factory=dict)  # class name -> weight; empty: equal
    isl_stddev: float = Field(0.0, ge=0.0)
    osl_stddev: float = Field(0.0, ge=0.0)
    isl_min: int | None = Field(None, ge=1)
    isl_max: int | None = Field(None, ge=1)
    osl_min: int | None = Field(None, ge=1)
    osl_max: int | None = Field(None, ge=1)
    trace_file: Path | None = None
    max_model_len: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _check(self) -> LengthSettings:
        if self.pattern == "trace" and self.trace_file is None:
            raise ValueError("pattern 'trace' needs trace_file (a JSONL file with isl and osl per line)")
        return self


class LoadSettings(BaseModel):
    """How hard: closed-loop `concurrency` workers, or Poisson arrivals at `request_rate` per second.

    The run stops launching requests after `num_requests` or `duration_s`, whichever comes first (at
    least one must be set); requests in flight then finish. `warmup_requests` run before, unmeasured.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int | None = Field(None, ge=1)
    request_rate: float | None = Field(None, gt=0.0)
    max_concurrency: int | None = Field(None, ge=1)  # rate mode: cap on requests in flight
    num_requests: int | None = Field(None, ge=1)
    duration_s: float | None = Field(None, gt=0.0)
    warmup_requests: int = Field(0, ge=0)
    seed: int = 0
    # Client processes sharing the load (each its share of the concurrency or rate, the requests and the
    # warm-up): one Python client spends ~30 us of CPU per streamed token, a core near 30k tokens/s.
    client_processes: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> LoadSettings:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("set exactly one of concurrency and request_rate")
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("set num_requests, duration_s or both: the run must be bounded")
        for name in ("concurrency", "num_requests", "max_concurrency"):
            value = getattr(self, name)
            if value is not None and value < self.client_processes:
                raise ValueError(
                    f"{name} {value} is less than client_processes {self.client_processes}: each needs one"
                )
        return self


class PromptSettings(BaseModel):
    """What the prompts hold, and where to keep a copy of them.

    source: random-tokens (uniform vocabulary ids, as trtllm-bench's synthetic prompts; needs a
    tokenizer) or corpus (cuts of an English text); None picks random-tokens with a tokenizer and
    corpus without. prefix_len: random-tokens only; every prompt begins with the same prefix_len
    random ids (after BOS), then ids of its own, and a request whose ISL leaves no room for one
    (ISL <= special tokens + prefix_len) stops the run with an error. save_file: JSONL, one line
    per measured request with the ids of the text sent (special tokens included) and its OSL.
    send_token_ids: send each prompt as those ids rather than its text (generate_stream and grpc: the
    `input_ids` input; openai-completions: `prompt` as ids), so the server tokenizes nothing, as trtllm-bench
    feeds its engine; needs a tokenizer, and a protocol that takes ids (not openai-chat).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: PromptSource | None = None
    prefix_len: int = Field(0, ge=0)
    save_file: Path | None = None
    send_token_ids: bool = False

    def resolved_source(self, has_tokenizer: bool) -> PromptSource:
        if self.source is not None:
            return self.source
        return "random-tokens" if has_tokenizer else "corpus"


class LLMBenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "localhost:8000"  # host:port (http:// optional); gRPC: the gRPC port
    protocol: Protocol = "generate_stream"
    model: str
    model_version: str = ""
    tokenizer: Path | None = None  # tokenizer.json or a folder with it: prompts of exact length
    prompts: PromptSettings = PromptSettings()
    lengths: LengthSettings = LengthSettings()
    load: LoadSettings
    temperature: float | None = Field(None, ge=0.0)
    extra_body: dict = Field(default_factory=dict)  # merged into each HTTP body / sampling parameters
    request_timeout_s: float = Field(600.0, gt=0.0)
    output_dir: Path | None = None  # bench.json, requests.csv and the PNG plots go here
    plots: bool = True
    progress: bool = True

    @computed_field
    @property
    def prompt_source(self) -> PromptSource:
        """The source in effect (bench.json records it beside `prompts`)."""
        return self.prompts.resolved_source(has_tokenizer=self.tokenizer is not None)

    @model_validator(mode="after")
    def _check(self) -> LLMBenchSettings:
        # Without a tokenizer there is no vocabulary to draw from and no ids to record.
        if self.tokenizer is None and self.prompts.source == "random-tokens":
            raise ValueError("prompt source 'random-tokens' needs a tokenizer (--tokenizer) to draw ids from")
        if self.tokenizer is None and self.prompts.save_file is not None:
            raise ValueError("saving prompts records their token ids: it needs a tokenizer (--tokenizer)")
        if self.prompts.send_token_ids and self.tokenizer is None:
            raise ValueError("sending prompts as token ids needs a tokenizer (--tokenizer) to know them")
        if self.prompts.send_token_ids and self.protocol == "openai-chat":
            raise ValueError("openai-chat takes messages of text: prompts as token ids need another protocol")
        if self.prompts.prefix_len and self.prompt_source != "random-tokens":
            raise ValueError(
                "a shared prefix (prefix_len) is built of random tokens: it needs prompt source random-tokens"
            )
        return self
