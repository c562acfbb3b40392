"""`modelgate tune`: flags -> TuneSettings -> a run -> the table, the verdict and the files.

Exit status: 0 when the chosen config meets the targets; 1 when none does (the closest is written, and said
so) or no candidate completed a request; 2 for bad input (nothing is served then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from modelgate.clients.bench.cli import add_length_arguments, length_settings
from modelgate.clients.tune.tune_errors import TuneInputError
from modelgate.core.cli_help import add_command

_DEFAULT_NUM_REQUESTS = 100  # without --num-requests and without a trace (a trace: one pass over it)


def add_tune_command(commands) -> None:
    tune = add_command(
        commands,
        "tune",
        "serve an LLM with candidate engine settings, measure each under given traffic, write the best config.pbtxt",
    )
    _add_model(tune.add_argument_group("model and outputs"))
    add_length_arguments(
        tune.add_argument_group("traffic: request pattern (lengths in tokens)"),
        pattern_default=None,
        without_max_model_len="the model's max_model_len (its config's, else its checkpoint's)",
    )
    _add_load(tune.add_argument_group("traffic: load"))
    _add_search(tune.add_argument_group("targets and search"))
    tune.set_defaults(run=run_tune_command)


def _add_model(group) -> None:
    group.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        help="an LLM model folder: config.pbtxt and a version folder (required)",
    )
    group.add_argument("--model-version", help="the version folder to serve; without it, the highest numbered")
    group.add_argument(
        "--output-dir",
        type=Path,
        required=True,
        help="config.pbtxt, candidates.csv, report.txt, tune.png, tune_log.jsonl (a rerun resumes from it) (required)",
    )
    group.add_argument(
        "--device", help="cpu or cuda:N: where the candidates run; without it, where the model's instance_group says"
    )
    group.add_argument("--no-plots", action="store_true", help="write no tune.png")


def _add_load(group) -> None:
    how = group.add_mutually_exclusive_group()
    how.add_argument(
        "--concurrency", type=int, help="closed loop: this many requests in flight; without it, see --request-rate"
    )
    how.add_argument(
        "--request-rate",
        type=float,
        help="Poisson arrivals per second; without it and --concurrency, the trace's own arrival rate (a trace "
        "with timestamps only)",
    )
    group.add_argument(
        "--max-concurrency", type=int, help="with --request-rate: cap on requests in flight; without it, no cap"
    )
    group.add_argument(
        "--num-requests",
        type=int,
        help=f"measured requests per candidate; without it, one pass over the trace, else {_DEFAULT_NUM_REQUESTS}",
    )
    group.add_argument("--warmup-requests", type=int, default=2, help="requests per candidate sent first, not measured")
    group.add_argument("--seed", type=int, default=0, help="seed of the lengths, prompts and arrival times")


def _add_search(group) -> None:
    group.add_argument("--ttft-p99-ms", type=float, help="target TTFT p99 in ms; without it, no TTFT target")
    group.add_argument(
        "--itl-p99-ms", type=float, help="target inter-token latency p99 in ms; without it, no ITL target"
    )
    group.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="a grid axis: an engine setting (config parameter) and its values; repeatable (the grid is their "
        "product); without it and --candidate, max_num_seqs x max_num_batched_tokens at 1/2, 1 and 2x the model's",
    )
    group.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME=V[,NAME=V]",
        help="one explicit candidate, measured after the grid; repeatable; without it, the grid only",
    )
    group.add_argument(
        "--time-budget-s", type=float, default=600.0, help="seconds this run may take (0: choose from the log)"
    )
    group.add_argument(
        "--refine-rounds", type=int, default=2, help="rounds of candidates around the best after the grid"
    )
    group.add_argument(
        "--refine-share", type=float, default=0.3, help="fraction of the budget the grid leaves for refinement"
    )
    group.add_argument(
        "--server-start-timeout-s", type=float, default=900.0, help="seconds one candidate's server may take to load"
    )


def run_tune_command(args: argparse.Namespace) -> int:
    from modelgate.clients.tune.tune_settings import TuneSettings
    from modelgate.clients.tune.tuner import run_tune

    try:
        lengths = length_settings(args)
        settings = TuneSettings(
            model_dir=args.model_dir,
            model_version=args.model_version,
            output_dir=args.output_dir,
            lengths=lengths,
            load=_load(args, lengths),
            targets={"ttft_p99_ms": args.ttft_p99_ms, "itl_p99_ms": args.itl_p99_ms},
            search=dict(_axis(text) for text in args.search),
            candidates=[_point(text) for text in args.candidate],
            device=args.device,
            time_budget_s=args.time_budget_s,
            refine_rounds=args.refine_rounds,
            refine_share=args.refine_share,
            server_start_timeout_s=args.server_start_timeout_s,
            plots=not args.no_plots,
        )
        result = run_tune(settings)
    except (ValidationError, ValueError) as exc:  # TuneInputError is a ValueError
        return _usage_error(exc)
    print()
    print(result.outputs.table)
    print()
    for line in result.outputs.summary + result.notes:
        print(line)
    for path in result.outputs.files:
        print(f"wrote {path}")
    return 0 if result.choice is not None and result.choice.meets_targets else 1


def _load(args: argparse.Namespace, lengths):
    from modelgate.clients.bench.llm_settings import LoadSettings
    from modelgate.clients.tune.traffic import trace_arrival_rate

    rate, concurrency = args.request_rate, args.concurrency
    if rate is None and concurrency is None:
        rate = trace_arrival_rate(lengths.trace_file) if lengths.pattern == "trace" else None
        if rate is None:
            raise TuneInputError(
                "give --concurrency or --request-rate (only a trace with timestamps brings its own rate)"
            )
    return LoadSettings(
        concurrency=concurrency,
        request_rate=rate,
        max_concurrency=args.max_concurrency,
        num_requests=args.num_requests or _trace_length(lengths) or _DEFAULT_NUM_REQUESTS,
        warmup_requests=args.warmup_requests,
        seed=args.seed,
    )


def _trace_length(lengths) -> int | None:
    from modelgate.clients.bench.patterns import read_trace_lengths

    return len(read_trace_lengths(lengths.trace_file)) if lengths.pattern == "trace" else None


def _axis(text: str) -> tuple[str, list[str]]:
    name, sign, values = text.partition("=")
    if not sign or not name.strip():
        raise TuneInputError(f"--search {text}: expected NAME=V1,V2")
    return name.strip(), [value.strip() for value in values.split(",") if value.strip()]


def _point(text: str) -> dict[str, str]:
    point = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sign, value = item.partition("=")
        if not sign or not name.strip() or not value.strip():
            raise TuneInputError(f"--candidate {text}: expected NAME=V[,NAME=V]")
        point[name.strip()] = value.strip()
    return point


def _usage_error(exc: Exception) -> int:
    if isinstance(exc, ValidationError):
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "settings"
            print(f"modelgate tune: {field}: {error['msg']}", file=sys.stderr)
    else:
        print(f"modelgate tune: {exc}", file=sys.stderr)
    return 2
