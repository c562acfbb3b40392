"""The contract of a streaming LLM client of `bench llm`, one implementation per protocol."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from modelgate.clients.bench.llm_settings import LLMBenchSettings
from modelgate.clients.bench.request_record import TokenTimeline


class RequestFailed(Exception):
    """The server answered with an error (HTTP status, an error event, a gRPC error message)."""


@dataclass
class StreamOutcome:
    """What one streamed request returned; times in seconds since it was sent."""

    timeline: TokenTimeline = field(default_factory=TokenTimeline)
    num_input_tokens: int | None = None  # as the server reports it
    num_output_tokens: int | None = None
    finish_reason: str | None = None


class Clock:
    """Seconds since a request was sent."""

    def __init__(self):
        self.sent = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.sent


class LLMClient(ABC):
    """Sends one request with a prompt and an output length; streams it back.

    `stream` must make the server generate exactly `osl` tokens (max_tokens plus ignore_eos),
    add every chunk that carries output to the outcome's timeline as it arrives, and raise
    RequestFailed for errors the server reports. One client serves many concurrent requests. Its prompt is
    text, or with PromptSettings.send_token_ids the token ids to send as they are.
    """

    protocol: str

    def __init__(self, settings: LLMBenchSettings):
        self.settings = settings

    async def open(self) -> None:
        """Connections, sessions: called once on the event loop that runs the benchmark."""

    async def close(self) -> None:
        """Releases what `open` made."""

    @abstractmethod
    async def stream(self, prompt: str | list[int], osl: int, clock: Clock) -> StreamOutcome: ...

    def sampling_fields(self, osl: int) -> dict:
        """vLLM-style sampling fields that fix the output length."""
        fields = {"max_tokens": osl, "ignore_eos": True}
        if self.settings.temperature is not None:
            fields["temperature"] = self.settings.temperature
        return fields


def http_base_url(url: str) -> str:
    return (url if "://" in url else f"http://{url}").rstrip("/")


def grpc_target(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")
