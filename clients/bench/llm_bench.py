"""`bench llm` as a library call: run the load, summarize, write JSON/CSV/plots.

result = run_llm_bench(LLMBenchSettings(model="tiny_llm", load=LoadSettings(concurrency=4, num_requests=60)))
print(result.table)
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from modelgate.clients.bench.client_processes import Share, run_shares
from modelgate.clients.bench.kserve_grpc_client import KServeGrpcStreamClient
from modelgate.clients.bench.kserve_http_client import KServeGenerateStreamClient
from modelgate.clients.bench.llm_client import Clock, LLMClient
from modelgate.clients.bench.llm_settings import LLMBenchSettings
from modelgate.clients.bench.load_generator import run_load
from modelgate.clients.bench.openai_client import OpenAIClient
from modelgate.clients.bench.patterns import RequestPlan, request_plans
from modelgate.clients.bench.plots import write_plots
from modelgate.clients.bench.prompt_file import SavedPrompt, write_saved_prompts
from modelgate.clients.bench.prompts import PromptBuilder
from modelgate.clients.bench.report import CSV_NAME, JSON_NAME, summary_table, write_csv, write_json
from modelgate.clients.bench.request_record import RequestRecord
from modelgate.clients.bench.statistics import summarize

_WARMUP_SEED_OFFSET = 1000  # warm-up draws its own plans: the measured sequence does not depend on it


@dataclass
class LLMBenchResult:
    settings: LLMBenchSettings
    summary: dict
    records: list[RequestRecord]  # measured requests, by plan index
    warmup: list[RequestRecord]
    table: str
    files: list[Path] = field(default_factory=list)


def run_llm_bench(settings: LLMBenchSettings) -> LLMBenchResult:
    """Runs the benchmark on a fresh event loop (call it from code that has none running), in
    `settings.load.client_processes` processes when more than one (client_processes.py)."""
    if settings.load.client_processes > 1:
        parts = run_shares(settings, _run_share)
        started = min(part_started for _, _, part_started in parts)
        records = sorted((r for records, _, _ in parts for r in records), key=lambda record: record.index)
        warmup = [r for _, part_warmup, _ in parts for r in part_warmup]
        return _finish(settings, records, warmup, started)
    return asyncio.run(bench_llm(settings))


def make_client(settings: LLMBenchSettings) -> LLMClient:
    if settings.protocol == "generate_stream":
        return KServeGenerateStreamClient(settings)
    if settings.protocol == "grpc":
        return KServeGrpcStreamClient(settings)
    return OpenAIClient(settings, chat=settings.protocol == "openai-chat")


async def bench_llm(settings: LLMBenchSettings) -> LLMBenchResult:
    records, warmup, started = await measure_share(settings, Share(0, 1))
    return _finish(settings, records, warmup, started)


async def measure_share(settings: LLMBenchSettings, share: Share) -> tuple[list, list, float]:
    """The requests of one client process (`share`; Share(0, 1): all of them): (records, warm-up records,
    perf_counter at the first measured launch), with each record's send time left absolute in start_s."""
    seed = settings.load.seed
    prompts = PromptBuilder(settings.tokenizer, share.prompt_seed(seed), settings.prompts)
    plans = itertools.islice(request_plans(settings.lengths, seed, prompts.shortest), share.index, None, share.count)
    warmup_plans = request_plans(settings.lengths, seed + _WARMUP_SEED_OFFSET + share.index, prompts.shortest)
    client = make_client(settings)
    load = share.load(settings.load)
    await client.open()
    try:
        with tqdm(
            total=load.num_requests,
            unit="req",
            disable=not settings.progress or share.count > 1,  # bars of several processes would interleave
            desc=f"{client.protocol} {settings.lengths.pattern}",
        ) as bar:
            keep_prompts = settings.prompts.save_file is not None
            measure = functools.partial(_measure, client, prompts, keep_prompts)
            result = await run_load(measure, plans, warmup_plans, load, lambda record: bar.update(1))
    finally:
        await client.close()
    return result.records, result.warmup, result.started


def _run_share(settings: LLMBenchSettings, share: Share) -> tuple[list, list, float]:
    """A client process's work (client_processes.py): its share of the run on an event loop of its own."""
    return asyncio.run(measure_share(settings, share))


def _finish(settings: LLMBenchSettings, records: list, warmup: list, started: float) -> LLMBenchResult:
    """Summary, table and files of a run whose records' start_s are still absolute send times."""
    for record in records + warmup:
        record.start_s -= started  # measure() left the send time (perf_counter) there
    summary = summarize(records)
    bench = LLMBenchResult(settings, summary, records, warmup, summary_table(summary, _title(settings)))
    if settings.output_dir is not None:
        bench.files = _write_outputs(bench)
    if settings.prompts.save_file is not None:
        bench.files.append(_save_prompts(settings.prompts.save_file, bench.records))
    return bench


async def _measure(client: LLMClient, prompts: PromptBuilder, keep_prompt: bool, plan: RequestPlan) -> RequestRecord:
    prompt = prompts.build(plan.isl)  # before the clock starts: building is not the server's time
    record = RequestRecord(
        plan.index, plan.pattern, client.protocol, started_at=time.time(), planned_isl=plan.isl, planned_osl=plan.osl
    )
    record.prompt = prompt if keep_prompt else None
    clock = Clock()
    record.start_s = clock.sent
    try:
        outcome = await client.stream(
            prompt.token_ids if client.settings.prompts.send_token_ids else prompt.text, plan.osl, clock
        )
    except Exception as exc:  # a failed request is a measurement too: keep going
        record.error = f"{type(exc).__name__}: {exc}"[:500]
        record.e2e_s = clock.elapsed()
        return record
    record.e2e_s = clock.elapsed()
    outcome.timeline.fill_record(record, outcome.num_output_tokens)
    record.isl = outcome.num_input_tokens if outcome.num_input_tokens is not None else (prompt.num_tokens or plan.isl)
    record.finish_reason = outcome.finish_reason
    if record.osl == 0:
        record.error = "the stream ended without output tokens"
    return record


def _save_prompts(path: Path, records: list[RequestRecord]) -> Path:
    """Every measured request's prompt, failed ones too (they were sent); warm-up requests are left out."""
    write_saved_prompts(
        path, (SavedPrompt(r.prompt.token_ids, r.planned_osl, r.index, r.pattern, r.prompt.text) for r in records)
    )
    return Path(path)


def _title(settings: LLMBenchSettings) -> str:
    load = settings.load
    how = f"concurrency {load.concurrency}" if load.concurrency else f"{load.request_rate:g} req/s Poisson"
    return (
        f"modelgate bench llm: {settings.model} over {settings.protocol} at {settings.url}, "
        f"pattern {settings.lengths.pattern}, {how}"
    )


def _write_outputs(bench: LLMBenchResult) -> list[Path]:
    folder = Path(bench.settings.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / JSON_NAME, bench.settings.model_dump(mode="json"), bench.summary, bench.records)
    write_csv(folder / CSV_NAME, bench.records)
    files = [folder / JSON_NAME, folder / CSV_NAME]
    if bench.settings.plots:
        subtitle = f"{bench.settings.model}, {bench.settings.protocol}"
        files += write_plots(bench.records, folder, subtitle)
    return files
