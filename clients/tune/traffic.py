"""The traffic every candidate gets: one `bench llm` run, the same requests (same seed) for each.

Requests are shortened to fit the model's context (its max_model_len, else the checkpoint's) unless the traffic
names a max_model_len of its own; prompts are built with the checkpoint's tokenizer for exact input lengths.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from modelgate.clients.bench.llm_bench import bench_llm
from modelgate.clients.bench.llm_settings import LengthSettings, LLMBenchSettings, LoadSettings
from modelgate.clients.bench.patterns import PatternError, read_trace_lengths
from modelgate.clients.size.traffic_input import TrafficInputError, read_traffic
from modelgate.clients.tune.model_folder import ModelFolder
from modelgate.clients.tune.tune_errors import TuneInputError


def fitted_lengths(lengths: LengthSettings, model: ModelFolder) -> LengthSettings:
    """`lengths`, with the model's context as max_model_len when it sets none; a trace is read (checked) here."""
    if lengths.pattern == "trace":
        try:
            read_trace_lengths(lengths.trace_file)
        except PatternError as exc:
            raise TuneInputError(str(exc)) from None
    if lengths.max_model_len is not None or model.max_model_len() is None:
        return lengths
    return LengthSettings.model_validate({**lengths.model_dump(), "max_model_len": model.max_model_len()})


def trace_arrival_rate(path: Path) -> float | None:
    """Requests per second over the span the trace's timestamps cover; None without two distinct ones."""
    try:
        stamps = [r.timestamp for r in read_traffic(path) if r.timestamp is not None]
    except TrafficInputError as exc:
        raise TuneInputError(str(exc)) from None
    if len(stamps) < 2 or max(stamps) <= min(stamps):
        return None
    return (len(stamps) - 1) / (max(stamps) - min(stamps))


def bench_settings(
    model: ModelFolder, url: str, lengths: LengthSettings, load: LoadSettings, output_dir: Path
) -> LLMBenchSettings:
    return LLMBenchSettings(
        url=url,
        protocol="generate_stream",
        model=model.name,
        tokenizer=model.tokenizer,
        lengths=lengths,
        load=load,
        output_dir=output_dir,
        plots=False,
        progress=False,
    )


def run_bench(settings: LLMBenchSettings, timeout_s: float) -> dict:
    """The bench summary; TimeoutError when it runs past `timeout_s` (its requests are then abandoned)."""
    try:
        return asyncio.run(asyncio.wait_for(bench_llm(settings), timeout=max(timeout_s, 1e-3))).summary
    except asyncio.TimeoutError:  # not yet TimeoutError itself on Python 3.10
        raise TimeoutError(f"the benchmark ran past {timeout_s:.0f} s") from None
