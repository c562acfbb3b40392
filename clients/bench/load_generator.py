"""Closed-loop (N workers) and open-loop (Poisson arrivals) load over a stream of request plans.

The run launches plans until `num_requests` were launched or `duration_s` has passed, whichever
comes first; requests in flight then finish and are measured. Warm-up requests run before,
closed-loop, and are returned apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import numpy as np

from modelgate.clients.bench.llm_settings import LoadSettings
from modelgate.clients.bench.patterns import RequestPlan
from modelgate.clients.bench.request_record import RequestRecord

Measure = Callable[[RequestPlan], Awaitable[RequestRecord]]


@dataclass
class LoadResult:
    records: list[RequestRecord]  # measured, in launch order
    warmup: list[RequestRecord]
    started: float  # perf_counter at the first measured launch


class RequestBudget:
    """Hands out plans until the request count or the deadline is reached."""

    def __init__(self, plans: Iterator[RequestPlan], num_requests: int | None, duration_s: float | None):
        self.plans = plans
        self.left = num_requests
        self.deadline = None if duration_s is None else time.perf_counter() + duration_s

    def take(self) -> RequestPlan | None:
        if self.left is not None and self.left <= 0:
            return None
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return None
        if self.left is not None:
            self.left -= 1
        return next(self.plans)


async def run_load(
    measure: Measure,
    plans: Iterator[RequestPlan],
    warmup_plans: Iterator[RequestPlan],
    load: LoadSettings,
    on_done: Callable[[RequestRecord], None] = lambda record: None,
) -> LoadResult:
    warmup_workers = min(load.warmup_requests, load.concurrency or load.max_concurrency or 4)
    warmup_budget = RequestBudget(warmup_plans, load.warmup_requests, None)
    warmup = await _closed_loop(measure, warmup_budget, warmup_workers, lambda record: None)
    started = time.perf_counter()
    budget = RequestBudget(plans, load.num_requests, load.duration_s)
    if load.concurrency is not None:
        records = await _closed_loop(measure, budget, load.concurrency, on_done)
    else:
        records = await _open_loop(measure, budget, load, on_done)
    records.sort(key=lambda record: record.index)
    return LoadResult(records, warmup, started)


async def _closed_loop(measure: Measure, budget: RequestBudget, workers: int, on_done) -> list[RequestRecord]:
    records: list[RequestRecord] = []

    async def worker():
        while (plan := budget.take()) is not None:
            record = await measure(plan)
            records.append(record)
            on_done(record)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return records


async def _open_loop(measure: Measure, budget: RequestBudget, load: LoadSettings, on_done) -> list[RequestRecord]:
    """Poisson arrivals: exponential gaps of mean 1/rate; a capped run delays arrivals while full."""
    rng = np.random.default_rng(load.seed + 1)
    limit = asyncio.Semaphore(load.max_concurrency) if load.max_concurrency else None
    records: list[RequestRecord] = []
    tasks = []

    async def one(plan: RequestPlan):
        try:
            record = await measure(plan)
            records.append(record)
            on_done(record)
        finally:
            if limit is not None:
                limit.release()

    next_arrival = time.perf_counter()
    while True:
        await asyncio.sleep(max(0.0, next_arrival - time.perf_counter()))
        if limit is not None:
            await limit.acquire()
        plan = budget.take()
        if plan is None:
            if limit is not None:
                limit.release()
            break
        tasks.append(asyncio.create_task(one(plan)))
        next_arrival += rng.exponential(1.0 / load.request_rate)
    await asyncio.gather(*tasks)
    return records
