"""`modelgate bench llm` and `modelgate bench tensor`: flags -> settings -> a run -> a table (and files)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from modelgate.clients.bench.patterns import CLASS_NAMES, PatternError
from modelgate.core.cli_help import add_command


def add_bench_command(commands) -> None:
    bench = add_command(commands, "bench", "load generators: LLM serving (TTFT, ITL, TTC) and any KServe v2 model")
    kinds = bench.add_subparsers(dest="bench_command", required=True)
    _add_llm(add_command(kinds, "llm", "stream LLM requests of chosen ISL/OSL patterns and measure them"))
    _add_tensor(add_command(kinds, "tensor", "random tensors from a model's metadata over a concurrency sweep"))


def _add_llm(llm: argparse.ArgumentParser) -> None:
    _add_llm_target(llm.add_argument_group("target"))
    _add_llm_prompts(llm.add_argument_group("prompts"))
    add_length_arguments(llm.add_argument_group("request pattern (lengths in tokens)"))
    _add_llm_load(llm.add_argument_group("load"))
    out = llm.add_argument_group("output")
    out.add_argument(
        "--output-dir",
        type=Path,
        help="write bench.json, requests.csv and four PNG plots here; without it, only the table",
    )
    out.add_argument("--no-plots", action="store_true", help="with --output-dir, write no PNG plots")
    out.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    llm.set_defaults(run=run_llm)


def _add_llm_target(target) -> None:
    target.add_argument("--url", help="host:port; default localhost:8000 (HTTP protocols) or localhost:8001 (grpc)")
    target.add_argument(
        "--protocol",
        choices=["generate_stream", "grpc", "openai-chat", "openai-completions"],
        default="generate_stream",
        help="the route or service that streams tokens back",
    )
    target.add_argument("-m", "--model", required=True, help="name of the model to call (required)")
    target.add_argument("--model-version", default="", help="version to call; '' lets the server's policy pick")
    target.add_argument(
        "--tokenizer",
        type=Path,
        help="tokenizer.json or a model folder: prompts of exact ISL, random tokens by default; without it, "
        "English text at 0.75 words per token",
    )
    target.add_argument(
        "--temperature", type=float, help="sampling temperature of each request; without it, the server's default"
    )
    target.add_argument(
        "--extra-body",
        type=json.loads,
        default={},
        help="JSON object merged into each request body (grpc: into sampling_parameters)",
    )
    target.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")


def _add_llm_prompts(prompts) -> None:
    prompts.add_argument(
        "--prompt-source",
        choices=["random-tokens", "corpus"],
        help="random-tokens: uniformly random vocabulary ids, as trtllm-bench's synthetic prompts (needs "
        "--tokenizer); corpus: cuts of a built-in English text; default random-tokens with --tokenizer, else corpus",
    )
    prompts.add_argument(
        "--prefix-len",
        type=int,
        default=0,
        metavar="N",
        help="random-tokens: every prompt begins with the same N random tokens (after BOS), a shared system "
        "prompt for prefix-cache studies; every ISL must exceed N plus the special tokens, or the run stops "
        "with an error; 0: prompts share nothing",
    )
    prompts.add_argument(
        "--send-token-ids",
        action="store_true",
        help="send each prompt as its token ids (input_ids; openai-completions: prompt as ids), so the server "
        "tokenizes nothing, as trtllm-bench feeds its engine; needs --tokenizer; not with openai-chat",
    )
    prompts.add_argument(
        "--save-prompts",
        type=Path,
        metavar="FILE",
        help="write the measured requests' prompts as JSONL (token_ids as the tokenizer encodes the text sent, "
        "BOS included, and osl) for benchmarks/llm_engine_vs_transformers.py --prompts-file; needs --tokenizer; "
        "without it, none are saved",
    )


def add_length_arguments(
    lengths, pattern_default: str | None = "fixed", without_max_model_len: str = "none is shortened"
) -> None:
    """The request-pattern flags (`length_settings` reads them back); `modelgate tune` shares them.

    pattern_default None: --pattern defaults to trace when --trace-file is given, else to fixed.
    without_max_model_len: what the caller does without --max-model-len (for its help).
    """
    without = "; without it, trace when --trace-file is given, else fixed" if pattern_default is None else ""
    lengths.add_argument(
        "--pattern",
        default=pattern_default,
        choices=["fixed", *CLASS_NAMES, "mix", "normal", "uniform", "trace"],
        help="fixed: --isl/--osl; a class: its short/long lengths; mix: classes by --mix weights; "
        "normal: --isl/--osl with --*-stddev; uniform: --*-min..--*-max; trace: --trace-file" + without,
    )
    for name, default, meaning in (
        ("isl", 128, "input length (fixed; mean of normal)"),
        ("osl", 128, "output length (fixed; mean of normal)"),
        ("short-isl", 128, "input length of the short-in classes"),
        ("long-isl", 2048, "input length of the long-in classes"),
        ("short-osl", 128, "output length of the short-out classes"),
        ("long-osl", 1024, "output length of the long-out classes"),
    ):
        lengths.add_argument(f"--{name}", type=int, default=default, help=meaning)
    lengths.add_argument(
        "--mix",
        default="",
        help="class weights of the mix, e.g. long-in-short-out=3,short-in-short-out=1; '' weighs all four alike",
    )
    lengths.add_argument("--isl-stddev", type=float, default=0.0, help="normal: standard deviation of the ISL")
    lengths.add_argument("--osl-stddev", type=float, default=0.0, help="normal: standard deviation of the OSL")
    for side, bound, fallback in (
        ("isl", "min", "1"),
        ("isl", "max", "--isl"),
        ("osl", "min", "1"),
        ("osl", "max", "--osl"),
    ):
        text = f"uniform: the {side.upper()}'s {bound}imum; default {fallback}"
        lengths.add_argument(f"--{side}-{bound}", type=int, help=text)
    lengths.add_argument(
        "--trace-file", type=Path, help="trace: JSONL with isl and osl per line; without it, --pattern trace is refused"
    )
    lengths.add_argument(
        "--max-model-len",
        type=int,
        help=f"shorten requests (input first) to fit this context; without it, {without_max_model_len}",
    )


def _add_llm_load(load) -> None:
    how = load.add_mutually_exclusive_group()
    how.add_argument("--concurrency", type=int, help="closed loop: this many requests in flight (default 1)")
    how.add_argument(
        "--request-rate", type=float, help="open loop: Poisson arrivals per second; without it, the closed loop"
    )
    load.add_argument(
        "--max-concurrency", type=int, help="with --request-rate: cap on requests in flight; without it, no cap"
    )
    load.add_argument(
        "--num-requests", type=int, help="stop launching after this many (default 100 without --duration)"
    )
    load.add_argument(
        "--duration", type=float, help="stop launching after this many seconds; without it, --num-requests only"
    )
    load.add_argument("--warmup-requests", type=int, default=0, help="requests sent first and not measured")
    load.add_argument("--seed", type=int, default=0, help="seed of the lengths, prompts and arrival times")
    load.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="spread the load over this many client processes, each with its share of the concurrency (or "
        "rate) and requests: one client process spends ~30 us of CPU per streamed token; default 1",
    )


def run_llm(args: argparse.Namespace) -> int:
    from modelgate.clients.bench.llm_bench import run_llm_bench
    from modelgate.clients.bench.llm_settings import LLMBenchSettings, LoadSettings, PromptSettings
    from modelgate.clients.bench.prompt import PromptError

    try:
        settings = LLMBenchSettings(
            url=args.url or ("localhost:8001" if args.protocol == "grpc" else "localhost:8000"),
            protocol=args.protocol,
            model=args.model,
            model_version=args.model_version,
            tokenizer=args.tokenizer,
            prompts=PromptSettings(
                source=args.prompt_source,
                prefix_len=args.prefix_len,
                save_file=args.save_prompts,
                send_token_ids=args.send_token_ids,
            ),
            temperature=args.temperature,
            extra_body=args.extra_body,
            request_timeout_s=args.request_timeout,
            output_dir=args.output_dir,
            plots=not args.no_plots,
            progress=not args.no_progress,
            lengths=length_settings(args),
            load=LoadSettings(
                concurrency=args.concurrency if args.concurrency or args.request_rate else 1,
                request_rate=args.request_rate,
                max_concurrency=args.max_concurrency,
                num_requests=args.num_requests if args.num_requests or args.duration else 100,
                duration_s=args.duration,
                warmup_requests=args.warmup_requests,
                seed=args.seed,
                client_processes=args.client_processes,
            ),
        )
    except (ValidationError, ValueError) as exc:  # ValueError: --mix weights that are not numbers
        return _usage_error("llm", exc)
    try:
        result = run_llm_bench(settings)
    except (PatternError, PromptError, FileNotFoundError) as exc:  # a bad trace file, ISL or tokenizer path
        return _usage_error("llm", exc)
    print(result.table)
    for path in result.files:
        print(f"wrote {path}")
    return 0 if result.summary["num_ok"] else 1


def length_settings(args: argparse.Namespace):
    """LengthSettings from the flags of `add_length_arguments` (ValidationError, ValueError on bad ones)."""
    from modelgate.clients.bench.llm_settings import LengthSettings

    pattern = args.pattern or ("trace" if args.trace_file is not None else "fixed")
    return LengthSettings(
        pattern=pattern,
        isl=args.isl,
        osl=args.osl,
        short_isl=args.short_isl,
        long_isl=args.long_isl,
        short_osl=args.short_osl,
        long_osl=args.long_osl,
        mix_weights=_weights(args.mix),
        isl_stddev=args.isl_stddev,
        osl_stddev=args.osl_stddev,
        isl_min=args.isl_min,
        isl_max=args.isl_max,
        osl_min=args.osl_min,
        osl_max=args.osl_max,
        trace_file=args.trace_file,
        max_model_len=args.max_model_len,
    )


def _add_tensor(tensor: argparse.ArgumentParser) -> None:
    tensor.add_argument("--url", help="host:port; default localhost:8000 (http) or localhost:8001 (grpc)")
    tensor.add_argument("--protocol", choices=["http", "grpc"], default="http", help="KServe v2 protocol")
    tensor.add_argument("-m", "--model", required=True, help="name of the model to call (required)")
    tensor.add_argument("--model-version", default="", help="version to call; '' lets the server's policy pick")
    tensor.add_argument("--concurrency", default="1,4,16", help="comma-separated levels of the sweep")
    tensor.add_argument("--num-requests", type=int, help="requests per level (default 100 without --duration)")
    tensor.add_argument("--duration", type=float, help="seconds per level; without it, --num-requests only")
    tensor.add_argument("--warmup-requests", type=int, default=5, help="requests per level sent first, not measured")
    tensor.add_argument("--batch-size", type=int, default=1, help="the batch dimension of batched models")
    tensor.add_argument("--shape-size", type=int, default=16, help="the size given to every other -1 dimension")
    tensor.add_argument(
        "--shape", action="append", default=[], help="NAME:D1,D2 for one input (no batch dim); repeatable"
    )
    tensor.add_argument("--seed", type=int, default=0, help="seed of the random input values")
    tensor.add_argument(
        "--shared-memory",
        choices=["none", "system"],
        default="none",
        help="system: inputs in system shared-memory regions registered once (the server needs "
        "--allow-shared-memory true), as perf_analyzer's --shared-memory system",
    )
    tensor.add_argument("--output-file", type=Path, help="write the sweep as JSON; without it, only the table")
    tensor.set_defaults(run=run_tensor)


def run_tensor(args: argparse.Namespace) -> int:
    from tritonclient.utils import InferenceServerException

    from modelgate.clients.bench.tensor_bench import TensorBenchSettings, run_tensor_bench
    from modelgate.clients.bench.tensor_inputs import TensorInputError

    try:
        settings = TensorBenchSettings(
            url=args.url or ("localhost:8001" if args.protocol == "grpc" else "localhost:8000"),
            protocol=args.protocol,
            model=args.model,
            model_version=args.model_version,
            concurrency=[int(level) for level in args.concurrency.split(",") if level.strip()],
            num_requests=args.num_requests if args.num_requests or args.duration else 100,
            duration_s=args.duration,
            warmup_requests=args.warmup_requests,
            batch_size=args.batch_size,
            shape_size=args.shape_size,
            shared_memory=args.shared_memory,
            shapes=_shapes(args.shape),
            seed=args.seed,
            output_file=args.output_file,
        )
        result = run_tensor_bench(settings)
    except (ValidationError, ValueError, TensorInputError, InferenceServerException, OSError) as exc:
        return _usage_error("tensor", exc)
    print(result.table)
    if settings.output_file is not None:
        print(f"wrote {settings.output_file}")
    return 0 if all(level.num_ok for level in result.levels) else 1


def _weights(text: str) -> dict[str, float]:
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition("=")
        try:
            weights[name.strip()] = float(weight or 1)
        except ValueError:
            raise ValueError(f"--mix {item}: expected CLASS=WEIGHT with a number") from None
    return weights


def _shapes(items: list[str]) -> dict[str, list[int]]:
    shapes = {}
    for item in items:
        name, _, dims = item.rpartition(":")
        if not name:
            raise ValueError(f"--shape {item}: expected NAME:D1,D2")
        shapes[name] = [int(d) for d in dims.split(",") if d.strip()]
    return shapes


def _usage_error(command: str, exc: Exception) -> int:
    if isinstance(exc, ValidationError):
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "settings"
            print(f"modelgate bench {command}: {field}: {error['msg']}", file=sys.stderr)
    else:
        print(f"modelgate bench {command}: {exc}", file=sys.stderr)
    return 2
