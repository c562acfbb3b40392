"""`modelgate size repository DIR`: a packing plan for a model repository before the server loads it.

Exit codes: 0 when everything fits, 1 when a model is refused or an LLM does not work at the given isl/osl
(each said why), 2 when the plan cannot be made (no such folder, no GPU, a bad flag).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from modelgate.clients.size.gpu_models import known_gpu_names, parse_gpus, this_machines_gpus
from modelgate.clients.size.packing import gpu_limits, load_order, pack
from modelgate.clients.size.repository_models import read_repository
from modelgate.clients.size.repository_plan import plan_repository
from modelgate.clients.size.repository_report import render_json, render_text
from modelgate.core.byte_sizes import parse_bytes
from modelgate.core.cli_help import add_command


def add_repository_command(kinds) -> None:
    repository = add_command(
        kinds,
        "repository",
        "a packing plan for a model repository: each model's bytes and where they come from, what fits on which "
        "GPU, and what each LLM's KV cache gets",
    )
    repository.add_argument("directory", type=Path, help="the model repository (what serve's --model-repository names)")
    repository.add_argument(
        "--gpu",
        action="append",
        help=f"a GPU to pack onto: a card ({known_gpu_names()}), a size (40GiB), either after a count "
        "(2xH100-80GB); repeat for several, numbered in order (default: this machine's GPUs, through NVML)",
    )
    repository.add_argument(
        "--gpu-memory-limit",
        help="memory the models may hold on each GPU, as serve's flag: bytes (40GiB) or a fraction (0.8, 80%%) "
        "(default: the GPU's size)",
    )
    repository.add_argument("--isl", type=int, default=1024, help="input tokens per LLM sequence")
    repository.add_argument("--osl", type=int, default=1024, help="output tokens per LLM sequence")
    repository.add_argument(
        "--llm-overhead",
        default="0",
        help="bytes each LLM's engine holds beyond weights and KV cache (activations, CUDA graphs, CUDA context), "
        "taken from its KV budget; the engine measures these at load",
    )
    repository.add_argument(
        "--json",
        type=Path,
        help="also write the plan as JSON to this file ('-': JSON on stdout in place of the tables); without it, only the tables",
    )
    repository.set_defaults(run=run_repository)


def run_repository(args: argparse.Namespace) -> int:
    try:
        gpus = parse_gpus(args.gpu) if args.gpu else this_machines_gpus()
        if not gpus:
            raise ValueError(
                f"no GPU found through NVML on this machine; name the GPUs with --gpu ({known_gpu_names()})"
            )
        # parse_bytes refuses zero, which is this flag's default: no overhead
        overhead = 0 if args.llm_overhead.strip() == "0" else parse_bytes(args.llm_overhead)
        if args.isl < 1 or args.osl < 1:
            raise ValueError("--isl and --osl must be at least 1")
        rooms = gpu_limits(gpus, args.gpu_memory_limit)
        models = load_order(read_repository(args.directory))
    except (ValueError, OSError) as exc:
        print(f"modelgate size repository: {exc}", file=sys.stderr)
        return 2
    plan = plan_repository(models, pack(models, rooms), args.isl, args.osl, overhead)
    if args.json is not None and str(args.json) == "-":
        print(json.dumps(render_json(plan), indent=1))
    else:
        print(render_text(plan))
        if args.json is not None:
            args.json.write_text(json.dumps(render_json(plan), indent=1))
    return 1 if plan.problems else 0
