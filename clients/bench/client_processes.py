"""One benchmark run spread over several client processes, so that the load generator is not what limits it.

Process i of n takes every n-th request plan from i (the same plans, by index, as one process would send),
its share of the concurrency (or of the request rate), of the request count and of the warm-up, its own
prompt and arrival draws (identical draws in every process would send the same prompts at the same
moments), and measures them as `bench_llm` does. Its records keep their send times on the shared monotonic
clock (perf_counter, CLOCK_MONOTONIC on Linux), so the parent merges them into one run that starts with the
first process's first measured request.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from modelgate.clients.bench.llm_settings import LLMBenchSettings, LoadSettings

_SEED_STRIDE = 1_000_003  # far apart: a process's prompt and arrival seeds meet no other process's


@dataclass(frozen=True)
class Share:
    index: int
    count: int

    def part(self, total: int | None) -> int | None:
        """This process's part of `total` (None stays None): the parts of all processes add up to it."""
        if total is None:
            return None
        return total // self.count + (1 if self.index < total % self.count else 0)

    def load(self, load: LoadSettings) -> LoadSettings:
        """The share of `load` this process runs; its seed moves its arrival draws apart from the others'."""
        rate = None if load.request_rate is None else load.request_rate / self.count
        return load.model_copy(
            update={
                "concurrency": self.part(load.concurrency),
                "request_rate": rate,
                "max_concurrency": self.part(load.max_concurrency),
                "num_requests": self.part(load.num_requests),
                "warmup_requests": self.part(load.warmup_requests),
                "seed": load.seed + _SEED_STRIDE * self.index,
                "client_processes": 1,
            }
        )

    def prompt_seed(self, seed: int) -> int:
        return seed + _SEED_STRIDE * self.index


def run_shares(settings: LLMBenchSettings, run_share: Callable[[LLMBenchSettings, Share], tuple]) -> list[tuple]:
    """`run_share(settings, share)` in a process of its own per share (a module-level function: it is pickled
    to the process); their results, in process order."""
    count = settings.load.client_processes
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold threads
    with ProcessPoolExecutor(count, mp_context=context) as pool:
        futures = [pool.submit(run_share, settings, Share(index, count)) for index in range(count)]
        return [future.result() for future in futures]
