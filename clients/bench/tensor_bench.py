"""`bench tensor`: drive any KServe v2 model with random inputs over a concurrency sweep.

Each level runs closed-loop workers (tritonclient.http.aio or tritonclient.grpc.aio `infer`)
until its request count or duration is reached; latency is send to response, per request.
A small pool of random input sets is made up front and cycled, so the client's own work per
request stays small.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelgate.clients.bench.load_generator import RequestBudget
from modelgate.clients.bench.statistics import distribution
from modelgate.clients.bench.tensor_inputs import InputSpec, TensorInputError, input_specs, random_array
from modelgate.clients.bench.tensor_shared_memory import RegionInput, SharedInputPool

_INPUT_POOL = 8


class TensorBenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "localhost:8000"
    protocol: str = Field("http", pattern="^(http|grpc)$")
    model: str
    model_version: str = ""
    concurrency: list[int] = Field(default_factory=lambda: [1, 4, 16], min_length=1)
    num_requests: int | None = Field(None, ge=1)  # per level
    duration_s: float | None = Field(None, gt=0.0)  # per level
    warmup_requests: int = Field(5, ge=0)
    batch_size: int = Field(1, ge=1)
    shape_size: int = Field(16, ge=1)
    shapes: dict[str, list[int]] = Field(default_factory=dict)
    seed: int = 0
    # "system": inputs in shared-memory regions registered once (tensor_shared_memory.py), not in each request.
    shared_memory: str = Field("none", pattern="^(none|system)$")
    request_timeout_s: float = Field(60.0, gt=0.0)
    output_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> TensorBenchSettings:
        if min(self.concurrency) < 1:
            raise ValueError("concurrency levels must be at least 1")
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("set num_requests, duration_s or both: each level must be bounded")
        return self


@dataclass
class LevelResult:
    concurrency: int
    num_ok: int
    num_errors: int
    duration_s: float
    throughput_per_s: float  # successful requests per second
    latency_s: dict | None  # distribution(): mean, p50, p90, p99...
    errors: list[str]


@dataclass
class TensorBenchResult:
    settings: TensorBenchSettings
    inputs: list[InputSpec]
    levels: list[LevelResult]
    table: str


def run_tensor_bench(settings: TensorBenchSettings) -> TensorBenchResult:
    return asyncio.run(bench_tensor(settings))


async def bench_tensor(settings: TensorBenchSettings) -> TensorBenchResult:
    client = _Client(settings)
    try:
        specs = await client.input_specs()
        rng = np.random.default_rng(settings.seed)
        pool = [[(spec, random_array(spec, rng)) for spec in specs] for _ in range(_INPUT_POOL)]
        if settings.shared_memory == "system":
            await client.shared_inputs.create(client.client, pool)
            pool = client.shared_inputs.entries
        await _level(client, pool, max(1, min(settings.concurrency)), settings.warmup_requests, None)
        levels = [
            await _level(client, pool, level, settings.num_requests, settings.duration_s)
            for level in settings.concurrency
        ]
    finally:
        await client.close()
    result = TensorBenchResult(settings, specs, levels, _table(settings, specs, levels))
    if settings.output_file is not None:
        document = {
            "settings": settings.model_dump(mode="json"),
            "inputs": [asdict(s) for s in specs],
            "levels": [asdict(level) for level in levels],
        }
        Path(settings.output_file).write_text(json.dumps(document, indent=1))
    return result


async def _level(
    client: _Client, pool, concurrency: int, num_requests: int | None, duration_s: float | None
) -> LevelResult:
    budget = RequestBudget(itertools.count(), num_requests, duration_s)
    latencies: list[float] = []
    errors: list[str] = []

    async def worker():
        while (number := budget.take()) is not None:
            sent = time.perf_counter()
            try:
                await client.infer(pool[number % len(pool)])
                latencies.append(time.perf_counter() - sent)
            except Exception as exc:  # a failed request is counted, the sweep goes on
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

    started = time.perf_counter()
    if num_requests != 0:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    duration = time.perf_counter() - started
    return LevelResult(
        concurrency,
        len(latencies),
        len(errors),
        duration,
        len(latencies) / duration if duration else 0.0,
        distribution(latencies),
        sorted(set(errors))[:5],
    )


class _Client:
    """tritonclient's asyncio HTTP or gRPC client behind one small interface."""

    def __init__(self, settings: TensorBenchSettings):
        self.settings = settings
        if settings.protocol == "http":
            import tritonclient.http.aio as module

            self.client = module.InferenceServerClient(
                settings.url.split("://", 1)[-1],
                conn_limit=max(settings.concurrency),
                conn_timeout=settings.request_timeout_s,
            )
        else:
            import tritonclient.grpc.aio as module

            self.client = module.InferenceServerClient(settings.url.split("://", 1)[-1])
        self.module = module
        self.shared_inputs = SharedInputPool()

    async def input_specs(self) -> list[InputSpec]:
        name, version = self.settings.model, self.settings.model_version
        if self.settings.protocol == "http":
            metadata = await self.client.get_model_metadata(name, version)
            config = await self.client.get_model_config(name, version)
        else:
            metadata = await self.client.get_model_metadata(name, version, as_json=True)
            config = (await self.client.get_model_config(name, version, as_json=True))["config"]
        if config.get("model_transaction_policy", {}).get("decoupled"):
            raise TensorInputError(
                f"model '{name}' is decoupled; bench tensor sends unary infer requests (use bench llm for LLM models)"
            )
        s = self.settings
        return input_specs(metadata, int(config.get("max_batch_size", 0)), s.batch_size, s.shape_size, s.shapes)

    async def infer(self, arrays: list[tuple[InputSpec, np.ndarray]] | list[RegionInput]) -> None:
        inputs = []
        for item in arrays:
            if isinstance(item, RegionInput):
                tensor = self.module.InferInput(item.spec.name, list(item.spec.shape), item.spec.datatype)
                tensor.set_shared_memory(item.region, item.byte_size, offset=item.offset)
            else:
                spec, array = item
                tensor = self.module.InferInput(spec.name, list(spec.shape), spec.datatype)
                tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        if self.settings.protocol == "http":
            await self.client.infer(self.settings.model, inputs, model_version=self.settings.model_version)
        else:
            await self.client.infer(
                self.settings.model,
                inputs,
                model_version=self.settings.model_version,
                client_timeout=self.settings.request_timeout_s,
            )

    async def close(self) -> None:
        await self.shared_inputs.close(self.client)
        await self.client.close()


def _table(settings: TensorBenchSettings, specs: list[InputSpec], levels: list[LevelResult]) -> str:
    shapes = ", ".join(f"{s.name} {s.datatype}{list(s.shape)}" for s in specs)
    lines = [
        f"modelgate bench tensor: {settings.model} over {settings.protocol} at {settings.url}; inputs {shapes}"
        + (" in system shared memory" if settings.shared_memory == "system" else ""),
        f"{'concurrency':>11}{'requests':>10}{'errors':>8}{'infer/s':>10}{'mean ms':>10}{'p50 ms':>10}"
        f"{'p90 ms':>10}{'p99 ms':>10}",
    ]
    for level in levels:
        latency = level.latency_s
        cells = "".join(
            f"{latency[k] * 1e3:>10.2f}" if latency else f"{'-':>10}" for k in ("mean", "p50", "p90", "p99")
        )
        lines.append(
            f"{level.concurrency:>11}{level.num_ok:>10}{level.num_errors:>8}{level.throughput_per_s:>10.1f}{cells}"
        )
        lines += [f"  error: {error}" for error in level.errors]
    return "\n".join(lines)
