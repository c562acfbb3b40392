"""`modelgate size traffic`: lengths and engine settings per time-of-day window, from a trace or bench.json."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from modelgate.clients.size.checkpoint_shape import CheckpointShape
from modelgate.clients.size.gpu_models import known_gpu_names, parse_gpus
from modelgate.clients.size.memory import BYTES_PER_ELEMENT, GIB
from modelgate.clients.size.traffic import GpuSpec, WindowPlan, plan_windows, summarize_lengths
from modelgate.clients.size.traffic_input import TrafficInputError, read_traffic
from modelgate.core.cli_help import add_command

_COLUMNS = (
    ("window", "label", "{}"),
    ("requests", "num_requests", "{}"),
    ("req/s", "arrival_rate_per_s", "{:.3g}"),
    ("TTC s", "mean_ttc_s", "{:.3g}"),
    ("L", "concurrency", "{:.2f}"),
    ("max_in", "max_input_len", "{}"),
    ("max_out", "max_output_len", "{}"),
    ("max_model_len", "max_model_len", "{}"),
    ("max_num_seqs", "max_num_seqs", "{}"),
    ("max_num_batched_tokens", "max_num_batched_tokens", "{}"),
    ("KV tokens", "kv_tokens", "{:,}"),
    ("KV memory", "kv_bytes", None),
    ("seqs/GPU", "sequences_per_gpu", "{:,}"),
    ("GPUs", "gpus_needed", "{}"),
)


def add_traffic_command(kinds) -> None:
    traffic = add_command(
        kinds,
        "traffic",
        "ISL/OSL quantiles and engine settings per time-of-day window, from a server trace (JSONL) or a bench.json",
    )
    traffic.add_argument(
        "input", type=Path, help="trace JSONL (the LLM backend's trace_file) or bench llm's bench.json"
    )
    traffic.add_argument("--quantile", type=float, default=0.99, help="fraction of requests the limits cover")
    traffic.add_argument("--window-secs", type=int, default=3600, help="time-of-day window (divides a day)")
    traffic.add_argument("--utc-offset-hours", type=float, default=0.0, help="local time of the windows")
    traffic.add_argument("--block-size", type=int, default=16, help="tokens per KV cache block")
    traffic.add_argument(
        "--config",
        type=Path,
        help="a checkpoint's config.json (or folder): KV memory and GPUs per window; without it, those are '-'",
    )
    add_gpu_arguments(traffic)
    traffic.add_argument(
        "--json", type=Path, help="also write the summary and window plans as JSON; without it, only the tables"
    )
    traffic.set_defaults(run=run_traffic)


def add_gpu_arguments(parser: argparse.ArgumentParser) -> None:
    """The GPU that `size memory` and `size traffic --config` fit a checkpoint on."""
    parser.add_argument("--gpu-memory-gib", type=float, default=80.0, help="memory of one GPU, GiB")
    parser.add_argument(
        "--gpu", help=f"a card ({known_gpu_names()}) whose memory replaces --gpu-memory-gib (default: not used)"
    )
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=0.9, help="fraction of it for weights and KV cache"
    )
    parser.add_argument(
        "--weights-dtype", choices=sorted(BYTES_PER_ELEMENT), default="bf16", help="element type of the weights"
    )
    parser.add_argument(
        "--kv-dtype", choices=sorted(BYTES_PER_ELEMENT), default="bf16", help="element type of the KV cache"
    )


def gpu_memory(args: argparse.Namespace) -> tuple[str, int]:
    """(what to call it, bytes): the card `--gpu` names, else `--gpu-memory-gib`. ValueError for an unknown card."""
    if args.gpu:
        gpus = parse_gpus([args.gpu])
        if len(gpus) != 1:
            raise ValueError(f"--gpu '{args.gpu}': these sizings are for one GPU")
        gpu = gpus[0]
        return f"{gpu.name} ({gpu.total_bytes / GIB:.1f} GiB)", gpu.total_bytes
    return f"{args.gpu_memory_gib:g} GiB", int(args.gpu_memory_gib * GIB)


def run_traffic(args: argparse.Namespace) -> int:
    try:
        requests = read_traffic(args.input)
        gpu = _gpu(args) if args.config else None
        plans = plan_windows(
            requests, args.quantile, args.window_secs, int(args.utc_offset_hours * 3600), args.block_size, gpu
        )
    except (TrafficInputError, ValueError, FileNotFoundError) as exc:
        print(f"modelgate size traffic: {exc}", file=sys.stderr)
        return 2
    summaries = {
        "ISL": summarize_lengths([r.isl for r in requests]),
        "OSL": summarize_lengths([r.osl for r in requests]),
        "ISL+OSL": summarize_lengths([r.isl + r.osl for r in requests]),
    }
    print(f"{len(requests)} requests from {args.input}; limits cover {args.quantile:.4g} of requests (nearest rank)")
    print(_length_table(summaries))
    print(
        f"max input length {plans[0].max_input_len} tokens, max output length {plans[0].max_output_len} tokens "
        f"cover {args.quantile:.4g} of requests"
    )
    print()
    print(_plan_table(plans))
    if plans[0].concurrency is None:
        print("(no timestamps or times to completion: concurrency and the settings that need it are unknown)")
    if args.json:
        document = {
            "quantile": args.quantile,
            "lengths": {k: asdict(v) for k, v in summaries.items()},
            "windows": [asdict(p) for p in plans],
        }
        args.json.write_text(json.dumps(document, indent=1))
    return 0


def _gpu(args: argparse.Namespace) -> GpuSpec:
    path = args.config / "config.json" if args.config.is_dir() else args.config
    return GpuSpec(
        CheckpointShape.from_file(path),
        gpu_memory(args)[1],
        args.gpu_memory_utilization,
        args.weights_dtype,
        args.kv_dtype,
    )


def _length_table(summaries: dict) -> str:
    lines = [f"{'tokens':<8}{'count':>8}{'mean':>10}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"]
    for name, s in summaries.items():
        lines.append(f"{name:<8}{s.count:>8}{s.mean:>10.1f}{s.p50:>8}{s.p90:>8}{s.p99:>8}{s.max:>8}")
    return "\n".join(lines)


def _plan_table(plans: list[WindowPlan]) -> str:
    rows = [[title for title, _, _ in _COLUMNS]]
    for window in plans:
        rows.append([_cell(getattr(window, key), style) for _, key, style in _COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths)))
        for row in rows
    )


def _cell(value, style: str | None) -> str:
    if value is None:
        return "-"
    if style is None:
        return _bytes(value)
    return style.format(value)


def _bytes(value: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"
