"""`modelgate size memory`: print the memory arithmetic for a checkpoint config on a GPU."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelgate.clients.size.checkpoint_shape import CheckpointShape
from modelgate.clients.size.memory import GIB, parameter_counts, plan
from modelgate.clients.size.repository_cli import add_repository_command
from modelgate.clients.size.traffic_cli import add_gpu_arguments, add_traffic_command, gpu_memory
from modelgate.core.cli_help import add_command


def add_size_command(commands) -> None:
    size = add_command(commands, "size", "memory and engine sizing for LLM deployments, packing plans for repositories")
    kinds = size.add_subparsers(dest="size_command", required=True)
    memory = add_command(kinds, "memory", "weights, KV cache per token and what fits, from config.json")
    memory.add_argument(
        "--config", type=Path, required=True, help="a checkpoint's config.json (or its folder) (required)"
    )
    add_gpu_arguments(memory)
    memory.add_argument("--isl", type=int, default=1024, help="input tokens per sequence")
    memory.add_argument("--osl", type=int, default=1024, help="output tokens per sequence")
    memory.add_argument("--block-size", type=int, default=16, help="tokens per KV cache block")
    memory.set_defaults(run=run_memory)
    add_traffic_command(kinds)
    add_repository_command(kinds)


def run_memory(args: argparse.Namespace) -> int:
    path = args.config / "config.json" if args.config.is_dir() else args.config
    try:
        config = CheckpointShape.from_file(path)
        gpu_name, gpu_bytes = gpu_memory(args)
    except ValueError as exc:  # CheckpointShapeError too
        print(f"modelgate size memory: {exc}", file=sys.stderr)
        return 2
    result = plan(
        config,
        gpu_bytes,
        args.gpu_memory_utilization,
        args.weights_dtype,
        args.kv_dtype,
        args.isl,
        args.osl,
        args.block_size,
    )
    counts = parameter_counts(config)
    rows = [
        ("parameters", f"{counts.total / 1e9:.2f} B"),
        (f"weights ({args.weights_dtype})", f"{result.weight_bytes / GIB:.2f} GiB"),
        (f"KV per token ({args.kv_dtype})", f"{result.kv_bytes_per_token / 1024:.1f} KiB"),
        (
            f"KV budget ({args.gpu_memory_utilization:.0%} of {gpu_name})",
            f"{result.kv_budget_bytes / GIB:.2f} GiB",
        ),
        ("KV tokens that fit", f"{result.kv_tokens:,}"),
        (f"concurrent sequences at {result.sequence_tokens} tokens", f"{result.concurrent_sequences:,}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0 if result.kv_tokens > 0 else 1
