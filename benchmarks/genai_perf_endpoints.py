"""genai-perf, as users run it, against modelgate serving tiny_llm: one small run per endpoint type, and a table
of which pass (issue 18, item 6).

Starts `modelgate serve` on the example repository (only tiny_llm loaded) on free loopback ports, runs
`genai-perf profile` once per case (chat, completions, kserve with --backend vllm and tensorrtllm, generate;
streaming or not), and prints for each: the endpoint type, PASS/FAIL, the output token throughput and the
request count from genai-perf's export (profile_export_genai_perf.json), and the command.

A case passes when genai-perf exits 0 and its export counts every request. One case is expected to fail:
`--endpoint-type generate --streaming` posts `"stream": true` to .../generate (not .../generate_stream), and the
model streams while generate takes one response; Triton answers that with status 200 and
`{"error": "generate expects model to produce exactly 1 response, ..."}`, on which genai-perf fails
(KeyError 'text_output'). modelgate answers the same; the script replays genai-perf's request to check that
the failure is that answer and marks it `FAIL (as Triton)`. The case after it shows how a Triton user gets
streaming generate numbers: `--endpoint v2/models/M/generate_stream`.

Exit status 1 when a case fails otherwise (with --strict, when any case fails).

genai-perf runs perf_analyzer from PATH; without one there, the script puts
clients/perf_analyzer/run_perf_analyzer.sh on PATH under that name (set it up with setup_perf_analyzer.sh).

    python benchmarks/genai_perf_endpoints.py
    python benchmarks/genai_perf_endpoints.py --cases kserve-tensorrtllm generate-streaming --concurrency 4
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.pinned_server import Server, free_port, stop_server, wait_ready  # noqa: E402

PERF_ANALYZER_WRAPPER = ROOT / "clients" / "perf_analyzer" / "run_perf_analyzer.sh"
# Triton's http_server.cc answers a non-streaming generate whose model sent other than one response so.
TRITON_COUNT_MESSAGE = "generate expects model to produce exactly 1 response"


@dataclass(frozen=True)
class Case:
    name: str
    endpoint_type: str  # as the table shows it
    protocol: str  # "http" or "grpc": which port -u names
    args: tuple[str, ...]
    fails_on_triton: bool = False
    note: str = ""  # shown when it passes


CASES = (
    Case("chat", "chat", "http", ("--endpoint-type", "chat")),
    Case("chat-streaming", "chat --streaming", "http", ("--endpoint-type", "chat", "--streaming")),
    Case("completions", "completions", "http", ("--endpoint-type", "completions")),
    Case("completions-streaming", "completions --streaming", "http", ("--endpoint-type", "completions", "--streaming")),
    Case("kserve-vllm", "kserve vllm", "grpc", ("--endpoint-type", "kserve", "--backend", "vllm")),
    Case(
        "kserve-vllm-streaming",
        "kserve vllm --streaming",
        "grpc",
        ("--endpoint-type", "kserve", "--backend", "vllm", "--streaming"),
    ),
    Case(
        "kserve-vllm-deterministic",
        "kserve vllm --streaming, deterministic OSL",
        "grpc",
        ("--endpoint-type", "kserve", "--backend", "vllm", "--streaming", "--output-tokens-mean-deterministic"),
    ),
    Case("kserve-tensorrtllm", "kserve tensorrtllm", "grpc", ("--endpoint-type", "kserve", "--backend", "tensorrtllm")),
    Case(
        "kserve-tensorrtllm-streaming",
        "kserve tensorrtllm --streaming",
        "grpc",
        ("--endpoint-type", "kserve", "--backend", "tensorrtllm", "--streaming"),
    ),
    Case(
        "kserve-tensorrtllm-deterministic",
        "kserve tensorrtllm --streaming, deterministic OSL",
        "grpc",
        ("--endpoint-type", "kserve", "--backend", "tensorrtllm", "--streaming", "--output-tokens-mean-deterministic"),
    ),
    Case(
        "generate",
        "generate",
        "http",
        ("--endpoint-type", "generate"),
        note="OSL counts the prompt: genai-perf sends no exclude_input_in_output, and the text then starts with "
        "the prompt (as vLLM's backend on Triton answers)",
    ),
    Case(
        "generate-streaming",
        "generate --streaming",
        "http",
        ("--endpoint-type", "generate", "--streaming"),
        fails_on_triton=True,
    ),
    Case(
        "generate-streaming-endpoint",
        "generate --streaming, --endpoint .../generate_stream",
        "http",
        ("--endpoint-type", "generate", "--streaming", "--endpoint", "v2/models/{model}/generate_stream"),
    ),
)


@dataclass
class CaseResult:
    case: Case
    command: list[str]
    status: str  # PASS, FAIL, FAIL (as Triton)
    output_token_throughput: float | None
    request_count: float | None
    reason: str  # why it failed, or the case's note


def main() -> None:
    args = _parse_args()
    cases = [case for case in CASES if not args.cases or case.name in args.cases]
    work_dir = Path(args.artifact_dir or tempfile.mkdtemp(prefix="genai_perf_endpoints_"))
    work_dir.mkdir(parents=True, exist_ok=True)
    env = _environment_with_perf_analyzer(work_dir)
    server = _start_server(args, work_dir)
    try:
        _print_header(args, server, env, work_dir)
        results = [_run_case(case, args, server, work_dir, env) for case in cases]
    finally:
        stop_server(server.server)
    _print_table(results)
    failed = [r for r in results if r.status == "FAIL" or (args.strict and r.status != "PASS")]
    sys.exit(1 if failed else 0)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", default=str(ROOT / "model_repository"))
    parser.add_argument("--model", default="tiny_llm")
    parser.add_argument("--tokenizer", help="a folder with tokenizer.json (default: the model's version 1 folder)")
    parser.add_argument("--cases", nargs="+", choices=[case.name for case in CASES], help="default: all")
    parser.add_argument("--request-count", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--isl", type=int, default=32, help="synthetic input tokens (the context is 256)")
    parser.add_argument("--osl", type=int, default=16, help="output tokens asked for")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for one genai-perf run")
    parser.add_argument("--genai-perf", default=shutil.which("genai-perf") or "genai-perf")
    parser.add_argument("--artifact-dir", help="where genai-perf and the server write (default: a temp folder)")
    parser.add_argument("--strict", action="store_true", help="exit 1 on any failure, Triton's own included")
    return parser.parse_args()


@dataclass
class RunningServer:
    server: Server
    http_port: int
    grpc_port: int
    model: str


def _start_server(args: argparse.Namespace, work_dir: Path) -> RunningServer:
    """modelgate serve with only the model loaded, on loopback; waits until it is ready."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    command = [sys.executable, "-m", "modelgate", "serve", "--model-repository", args.model_repository]
    command += ["--model-control-mode", "explicit", "--load-model", args.model]
    command += ["--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1", "--metrics-address", "127.0.0.1"]
    command += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    log_path = work_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    server = Server("modelgate", process, http_port, log_path)
    try:
        wait_ready(server)
        ready = requests.get(f"http://127.0.0.1:{http_port}/v2/models/{args.model}/ready", timeout=10)
        if ready.status_code != 200:
            raise RuntimeError(f"model {args.model} is not ready (status {ready.status_code}); see {log_path}")
    except BaseException:
        stop_server(server)
        raise
    return RunningServer(server, http_port, grpc_port, args.model)


def _environment_with_perf_analyzer(work_dir: Path) -> dict[str, str]:
    """Our environment, with a `perf_analyzer` on PATH (the wrapper of clients/perf_analyzer/ if none is)."""
    env = dict(os.environ)
    if shutil.which("perf_analyzer"):
        return env
    if not PERF_ANALYZER_WRAPPER.exists():
        sys.exit("no perf_analyzer on PATH: run clients/perf_analyzer/setup_perf_analyzer.sh")
    bin_dir = work_dir / "bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "perf_analyzer"
    if not link.exists():
        link.symlink_to(PERF_ANALYZER_WRAPPER)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def _genai_perf_command(case: Case, args: argparse.Namespace, server: RunningServer, artifacts: Path) -> list[str]:
    port = server.grpc_port if case.protocol == "grpc" else server.http_port
    tokenizer = args.tokenizer or str(Path(args.model_repository) / args.model / "1")
    command = [args.genai_perf, "profile", "-m", args.model, "-u", f"127.0.0.1:{port}", "--tokenizer", tokenizer]
    command += [arg.format(model=args.model) for arg in case.args]
    command += ["--synthetic-input-tokens-mean", str(args.isl), "--synthetic-input-tokens-stddev", "0"]
    command += ["--output-tokens-mean", str(args.osl), "--num-prompts", str(args.request_count)]
    command += ["--request-count", str(args.request_count), "--warmup-request-count", "0"]
    command += ["--concurrency", str(args.concurrency), "--artifact-dir", str(artifacts)]
    return command


def _run_case(case: Case, args: argparse.Namespace, server: RunningServer, work_dir: Path, env) -> CaseResult:
    artifacts = work_dir / case.name
    shutil.rmtree(artifacts, ignore_errors=True)
    command = _genai_perf_command(case, args, server, artifacts)
    print(f"running {case.name} ...", file=sys.stderr, flush=True)
    try:
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout, cwd=work_dir)
        output, returncode = run.stdout + run.stderr, run.returncode
    except subprocess.TimeoutExpired as exc:
        output, returncode = _text(exc.stdout) + _text(exc.stderr), None
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "genai_perf_output.txt").write_text(output)
    throughput, count = _read_export(artifacts)
    if returncode == 0 and count == args.request_count and throughput:
        return CaseResult(case, command, "PASS", throughput, count, case.note)
    reason = _failure_reason(output, returncode, count, args.request_count)
    status = "FAIL (as Triton)" if case.fails_on_triton and _answers_as_triton(artifacts, server) else "FAIL"
    return CaseResult(case, command, status, throughput, count, reason)


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _read_export(artifacts: Path) -> tuple[float | None, float | None]:
    """(output token throughput in tokens/s, request count) from genai-perf's export; None where absent."""
    found = glob.glob(str(artifacts / "**" / "profile_export_genai_perf.json"), recursive=True)
    if not found:
        return None, None
    export = json.loads(Path(found[0]).read_text())
    return export.get("output_token_throughput", {}).get("avg"), export.get("request_count", {}).get("avg")


def _failure_reason(output: str, returncode: int | None, count: float | None, expected: int) -> str:
    """perf_analyzer's `Error: ...` line if it printed one, else the last `XError: ...` line of genai-perf."""
    if returncode is None:
        return "genai-perf timed out"
    lines = [line.strip() for line in output.splitlines()]
    pa_errors = [line for line in lines if line.startswith("Error: ")]
    raised = [line for line in lines if re.match(r"^[A-Za-z]*(Error|Exception): ", line)]
    if pa_errors or raised:
        return (pa_errors or raised[-1:])[0][:160]
    if returncode == 0:
        return f"the export counts {count} requests of {expected}"
    return f"genai-perf exited {returncode}"


def _answers_as_triton(artifacts: Path, server: RunningServer) -> bool:
    """Whether the server answers the case's first request (from genai-perf's inputs.json) as Triton does:
    status 200 and Triton's error object."""
    found = glob.glob(str(artifacts / "**" / "inputs.json"), recursive=True)
    if not found:
        return False
    payload = json.loads(Path(found[0]).read_text())["data"][0]["payload"][0]
    url = f"http://127.0.0.1:{server.http_port}/v2/models/{server.model}/generate"
    answer = requests.post(url, json=payload, timeout=60)
    return answer.status_code == 200 and answer.json().get("error", "").startswith(TRITON_COUNT_MESSAGE)


def _print_header(args: argparse.Namespace, server: RunningServer, env: dict[str, str], work_dir: Path) -> None:
    versions = subprocess.run([args.genai_perf, "--version"], capture_output=True, text=True, env=env)
    pa = subprocess.run(["perf_analyzer", "--version"], capture_output=True, text=True, env=env)
    print(f"genai-perf: {(versions.stdout + versions.stderr).strip().splitlines()[-1]}")
    print(f"perf_analyzer: {(pa.stdout + pa.stderr).strip().splitlines()[0]}")
    print(
        f"modelgate serve: {args.model_repository}, model {args.model} (HTTP {server.http_port}, gRPC {server.grpc_port})"
    )
    print(
        f"each case: ISL {args.isl}, OSL {args.osl}, {args.request_count} requests, concurrency {args.concurrency}, "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the start"
    )
    print(f"artifacts and logs: {work_dir}")


def _print_table(results: list[CaseResult]) -> None:
    """One row per case; its command is the common part (listed in full below the table) and the case's own
    arguments, which the `command` column shows."""
    print("\n| # | endpoint type | command (genai-perf profile ... +) | result | output tok/s | requests | note |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for number, result in enumerate(results, 1):
        throughput = f"{result.output_token_throughput:.1f}" if result.output_token_throughput else "-"
        count = f"{result.request_count:.0f}" if result.request_count is not None else "-"
        own = " ".join(
            _shown(arg) for arg in result.command[result.command.index("--tokenizer") + 2 :][: len(result.case.args)]
        )
        note = result.reason.replace("|", "/")
        print(
            f"| {number} | {result.case.endpoint_type} | `{own}` | {result.status} | {throughput} | {count} | {note} |"
        )
    print(
        "\nA check that each endpoint type works, not a speed measurement: a few requests on a CPU whose cores other "
        "work may share.\n\ncommands:"
    )
    for number, result in enumerate(results, 1):
        program, *rest = result.command
        print(f"{number}. {' '.join([Path(program).name, *map(_shown, rest)])}")


def _shown(arg: str) -> str:
    """An argument as a shell would take it, paths in the repository relative to it."""
    arg = arg.replace(str(ROOT) + "/", "")
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    main()
