"""OpenAI chat and completions streaming over HTTP (server-sent events), as vLLM serves them.

`stream_options.include_usage` asks for a last chunk with the token usage; its
completion_tokens are spread evenly over the chunks that carried text or the finish reason
(one token per chunk when the server gives no usage). `max_tokens` plus vLLM's `ignore_eos` fix the output length.
"""

from __future__ import annotations

import json

import aiohttp

from modelgate.clients.bench.llm_client import Clock, LLMClient, RequestFailed, StreamOutcome, http_base_url
from modelgate.clients.bench.sse import sse_data


class OpenAIClient(LLMClient):
    def __init__(self, settings, chat: bool):
        super().__init__(settings)
        self.chat = chat
        self.protocol = "openai-chat" if chat else "openai-completions"

    async def open(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_s)
        self.session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0))
        path = "/v1/chat/completions" if self.chat else "/v1/completions"
        self.url = http_base_url(self.settings.url) + path

    async def close(self) -> None:
        await self.session.close()

    async def stream(self, prompt: str | list[int], osl: int, clock: Clock) -> StreamOutcome:
        body = {
            "model": self.settings.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.sampling_fields(osl),
            **self.settings.extra_body,
        }
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        outcome = StreamOutcome()
        async with self.session.post(self.url, json=body) as response:
            if response.status != 200:
                raise RequestFailed(f"HTTP {response.status}: {(await response.text())[:500]}")
            async for data in sse_data(response):
                if data.strip() == "[DONE]":
                    break
                self._add_chunk(json.loads(data), outcome, clock.elapsed())
        return outcome

    def _add_chunk(self, chunk: dict, outcome: StreamOutcome, elapsed: float) -> None:
        if "error" in chunk:
            error = chunk["error"]
            raise RequestFailed(str(error.get("message", error) if isinstance(error, dict) else error))
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
            # The finishing chunk carries the last token even when its text is empty (held back, or
            # a stop token), as it does in modelgate and vLLM.
            if text or choice.get("finish_reason"):
                outcome.timeline.add(elapsed, None)
            outcome.finish_reason = choice.get("finish_reason") or outcome.finish_reason
        usage = chunk.get("usage")
        if usage:
            outcome.num_input_tokens = usage.get("prompt_tokens")
            outcome.num_output_tokens = usage.get("completion_tokens")
