"""KServe v2 / Triton `generate_stream` over HTTP (server-sent events), as vLLM's Triton backend takes it.

Body: `text_input` (or the prompt's token ids as `input_ids`), `stream`, `exclude_input_in_output` and `sampling_parameters` (a JSON string
of SamplingParams fields); `extra_body` keys are added to the body. Each event's
`num_output_tokens` is cumulative (modelgate, vLLM's backend), so a chunk's tokens are its
increase; without it each chunk with text counts as one token.
"""

from __future__ import annotations

import json

import aiohttp

from modelgate.clients.bench.llm_client import Clock, LLMClient, RequestFailed, StreamOutcome, http_base_url
from modelgate.clients.bench.sse import sse_data


class KServeGenerateStreamClient(LLMClient):
    protocol = "generate_stream"

    async def open(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_s)
        connector = aiohttp.TCPConnector(limit=0)  # the load generator, not the pool, bounds concurrency
        self.session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        version = f"/versions/{self.settings.model_version}" if self.settings.model_version else ""
        self.url = f"{http_base_url(self.settings.url)}/v2/models/{self.settings.model}{version}/generate_stream"

    async def close(self) -> None:
        await self.session.close()

    async def stream(self, prompt: str | list[int], osl: int, clock: Clock) -> StreamOutcome:
        body = {
            "text_input" if isinstance(prompt, str) else "input_ids": prompt,
            "stream": True,
            "exclude_input_in_output": True,
            "sampling_parameters": json.dumps(self.sampling_fields(osl)),
            **self.settings.extra_body,
        }
        outcome = StreamOutcome()
        async with self.session.post(self.url, json=body) as response:
            if response.status != 200:
                raise RequestFailed(f"HTTP {response.status}: {(await response.text())[:500]}")
            async for data in sse_data(response):
                self._add_event(json.loads(data), outcome, clock.elapsed())
        return outcome

    @staticmethod
    def _add_event(event: dict, outcome: StreamOutcome, elapsed: float) -> None:
        if "error" in event:
            raise RequestFailed(str(event["error"]))
        cumulative = event.get("num_output_tokens")
        if cumulative is None:
            outcome.timeline.add(elapsed, None if event.get("text_output") else 0)
        else:
            outcome.timeline.add(elapsed, int(cumulative) - (outcome.num_output_tokens or 0))
            outcome.num_output_tokens = int(cumulative)
        if event.get("num_input_tokens") is not None:
            outcome.num_input_tokens = int(event["num_input_tokens"])
        outcome.finish_reason = event.get("finish_reason") or outcome.finish_reason
