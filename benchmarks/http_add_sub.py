"""HTTP throughput and latency of `add_sub`, against the limit of the HTTP stack on this machine.

For each encoding (plain KServe v2 JSON, binary tensor extension) and each concurrency, wrk
POSTs the same `add_sub` request over keep-alive connections (closed loop: one request in
flight per connection) to

- modelgate: `modelgate serve --model-repository model_repository`, started here;
- the peer: `bare_http_peer.py`, aiohttp on the same event loop type (uvloop where installed),
  answering with the exact bytes modelgate answered, without decoding or inference.

It prints requests/s, p50 and p99 latency for both, and the ratios modelgate/peer: what
modelgate's own work (decode, validate, schedule, run the model on its thread, encode) costs
on top of the HTTP stack. Both servers are pinned to one core and the load generator (and
this script) to another with taskset, so the load generator never competes with the server;
the CPU columns show how busy each side was (a server near 100% is the bottleneck).

    python benchmarks/http_add_sub.py --duration 10 --warmup 2 --concurrency 1 16
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = Path(__file__).resolve().parent
MODEL = "add_sub"
INFER_PATH = f"/v2/models/{MODEL}/infer"
HEADER_LENGTH = "Inference-Header-Content-Length"
NOISY_NEIGHBOUR_CORES = 0.25  # other processes' CPU use during a run above which the table warns
INPUT0 = np.array([1.0, 2.0, 3.0, 4.0], dtype="<f4")
INPUT1 = np.array([0.5, 0.25, -1.0, 8.0], dtype="<f4")

WRK_SCRIPT = string.Template("""\
-- POST one fixed body; print one RESULT line (latencies in microseconds) when done.
local file = assert(io.open($body_path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
$header_lines

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f errors=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
""")


# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoding:
    """One way to send the `add_sub` request: the exact body and headers every request carries."""

    name: str
    body: bytes
    headers: dict[str, str]


def json_encoding() -> Encoding:
    """The plain KServe v2 JSON request; the answer is JSON too."""
    inputs = [_json_input("INPUT0", INPUT0), _json_input("INPUT1", INPUT1)]
    body = json.dumps({"inputs": inputs}, separators=(",", ":")).encode()
    return Encoding("json", body, {"Content-Type": "application/json"})


def binary_encoding() -> Encoding:
    """JSON header + raw little-endian FP32 bytes; binary outputs asked for, as tritonclient does."""
    inputs = [_binary_input("INPUT0", INPUT0), _binary_input("INPUT1", INPUT1)]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}, separators=(",", ":"))
    body = header.encode() + INPUT0.tobytes() + INPUT1.tobytes()
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return Encoding("binary", body, headers)


def _json_input(name: str, values: np.ndarray) -> dict:
    return {"name": name, "datatype": "FP32", "shape": list(values.shape), "data": values.tolist()}


def _binary_input(name: str, values: np.ndarray) -> dict:
    return {"name": name, "datatype": "FP32", "shape": list(values.shape),
            "parameters": {"binary_data_size": values.nbytes}}


# -- processes --------------------------------------------------------------------------------


@dataclass
class Server:
    """A server process pinned to one core, and where its log goes."""

    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads) so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(command: list[str], core: int, niceness: int) -> list[str]:
    """`command` bound to `core` with taskset, and under `nice -n niceness` unless that is 0."""
    return ["taskset", "-c", str(core), *(["nice", "-n", str(niceness)] if niceness else []), *command]


def start_server(name: str, command: list[str], port: int, core: int, niceness: int, log_dir: Path) -> Server:
    """Start `command` pinned to `core` and wait until /v2/health/ready answers 200."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(pinned(command, core, niceness), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    server = Server(name, process, port, log_path)
    try:
        wait_ready(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_ready(server: Server, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{_log_tail(server)}")
        if _get_status(server.port, "/v2/health/ready") == 200:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{server.name} not ready after {timeout_s:.0f} s:\n{_log_tail(server)}")


def stop_server(server: Server) -> None:
    """SIGTERM (both servers stop gracefully on it), SIGKILL if it lingers."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def _get_status(port: int, path: str) -> int | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None


def _log_tail(server: Server, lines: int = 30) -> str:
    return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-lines:])


# -- correctness ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedResponse:
    """One response as it went over the wire, replayed by the peer."""

    body: bytes
    content_type: str
    header_length: int | None

    def as_json(self) -> dict:
        return {"body_base64": base64.b64encode(self.body).decode(), "content_type": self.content_type,
                "header_length": self.header_length}


def post(port: int, encoding: Encoding) -> RecordedResponse:
    """Send `encoding`'s exact bytes once; raise unless the answer is 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", INFER_PATH, body=encoding.body, headers=encoding.headers)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"POST {INFER_PATH} ({encoding.name}) answered {response.status}: {body[:300]!r}")
    header_length = response.getheader(HEADER_LENGTH)
    return RecordedResponse(body, response.getheader("Content-Type", "").split(";")[0],
                            None if header_length is None else int(header_length))


def check_outputs(response: RecordedResponse, encoding: Encoding) -> None:
    """Decode with tritonclient and compare with numpy's sum and difference."""
    result = httpclient.InferenceServerClient.parse_response_body(response.body, header_length=response.header_length)
    _assert_sum_and_difference(result)
    is_binary = response.header_length is not None
    if is_binary != (encoding.name == "binary"):
        raise AssertionError(f"{encoding.name} request got a {'binary' if is_binary else 'JSON'} response")


def check_with_tritonclient(port: int) -> None:
    """One real tritonclient.http infer per encoding, as a user would call the server."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    for binary in (False, True):
        inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(INPUT0, binary_data=binary)
        inputs[1].set_data_from_numpy(INPUT1, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
        _assert_sum_and_difference(client.infer(MODEL, inputs, outputs=outputs))
    client.close()


def _assert_sum_and_difference(result) -> None:
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), INPUT0 + INPUT1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), INPUT0 - INPUT1)


# -- load generation --------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu: float  # fraction of one core the server used
    generator_cpu: float  # fraction of one core the load generator used
    other_cpu: float  # cores' worth of CPU that other processes (and the kernel) used meanwhile


class LoadGenerator:
    """Runs one closed-loop load (wrk, or the aiohttp fallback) pinned to `core`."""

    def __init__(self, kind: str, core: int, niceness: int, work_dir: Path):
        self.kind = kind
        self.core = core
        self.niceness = niceness
        self.work_dir = work_dir

    def run(self, port: int, encoding: Encoding, concurrency: int, duration_s: int) -> dict[str, float]:
        """Fields of the generator's RESULT line: requests, duration_us, p50_us, p99_us, errors."""
        command = self._command(f"http://127.0.0.1:{port}{INFER_PATH}", encoding, concurrency, duration_s)
        done = subprocess.run(pinned(command, self.core, self.niceness), capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"{self.kind} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return {key: float(value) for key, value in (f.split("=") for f in lines[-1].split()[1:])}

    def _command(self, url: str, encoding: Encoding, concurrency: int, duration_s: int) -> list[str]:
        body_path = self.work_dir / f"{encoding.name}.body"
        body_path.write_bytes(encoding.body)
        if self.kind == "aiohttp":
            headers = [arg for k, v in encoding.headers.items() for arg in ("--header", f"{k}: {v}")]
            return [sys.executable, str(BENCHMARKS / "aiohttp_load.py"), "--url", url, "--body-file",
                    str(body_path), *headers, "--concurrency", str(concurrency), "--duration", str(duration_s)]
        script = self.work_dir / f"{encoding.name}.lua"
        script.write_text(_wrk_script(body_path, encoding.headers))
        return ["wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--timeout", "10s", "-s", str(script), url]


def _wrk_script(body_path: Path, headers: dict[str, str]) -> str:
    lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    return WRK_SCRIPT.substitute(body_path=json.dumps(str(body_path)), header_lines="\n".join(lines))


def measure(generator: LoadGenerator, server: Server, encoding: Encoding, concurrency: int,
            duration_s: int, warmup_s: int) -> CaseResult:
    """Warm up, then one measured run; CPU use of both sides (and of everything else) over it."""
    if warmup_s > 0:
        generator.run(server.port, encoding, concurrency, warmup_s)
    before = CpuSnapshot.take(server)
    fields = generator.run(server.port, encoding, concurrency, duration_s)
    used = CpuSnapshot.take(server).minus(before)
    seconds = fields["duration_us"] / 1e6
    window = used.wall  # CPU shares over the whole window, including the generator's start and exit
    return CaseResult(
        requests_per_s=fields["requests"] / seconds,
        p50_ms=fields["p50_us"] / 1e3,
        p99_ms=fields["p99_us"] / 1e3,
        errors=int(fields["errors"]),
        server_cpu=used.server / window,
        generator_cpu=used.generator / window,
        other_cpu=max(0.0, used.machine - used.server - used.generator) / window,
    )


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds so far: the server's, the load generator's (finished children), the machine's; and wall time."""

    server: float
    generator: float
    machine: float
    wall: float

    @classmethod
    def take(cls, server: Server) -> CpuSnapshot:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(server.cpu_seconds(), usage.ru_utime + usage.ru_stime, _machine_busy_seconds(), time.monotonic())

    def minus(self, earlier: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(self.server - earlier.server, self.generator - earlier.generator,
                           self.machine - earlier.machine, self.wall - earlier.wall)


def _machine_busy_seconds() -> float:
    """Busy time of all cores: user, nice, system, irq, softirq and steal (what a noisy neighbour takes)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def median_run(runs: list[CaseResult]) -> CaseResult:
    """The run of median throughput: robust to a neighbour that disturbed one run."""
    return sorted(runs, key=lambda r: r.requests_per_s)[len(runs) // 2]


# -- report -----------------------------------------------------------------------------------


def print_environment(args: argparse.Namespace, generator: LoadGenerator, encodings: list[Encoding],
                      responses: dict[str, RecordedResponse]) -> None:
    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
          f"aiohttp {_version('aiohttp')}, event loop {_loop_name()}")
    niceness = f"; all under nice -n {args.nice}" if args.nice else ""
    print(f"pinning (taskset): modelgate and the bare peer on core {args.server_core}; "
          f"load generator ({_generator_name(generator)}, 1 thread) and this script on core {args.client_core}{niceness}")
    repeats = f", {args.repeat} runs each side (the run of median req/s shown)" if args.repeat > 1 else ""
    print(f"per case: {args.warmup} s warmup, then {args.duration} s measured{repeats}; closed loop, "
          "one request in flight per connection (concurrency = connections)")
    for encoding in encodings:
        print(f"{encoding.name:>6}: request {len(encoding.body)} B, response {len(responses[encoding.name].body)} B "
              "(the peer answers these exact bytes)")
    print()


def print_table(rows: list[tuple[str, int, CaseResult, CaseResult]]) -> None:
    head = (f"{'encoding':<8} {'conc':>4} | {'modelgate req/s':>15} {'p50 ms':>7} {'p99 ms':>7} {'cpu':>5} | "
            f"{'bare req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'cpu':>5} | {'req/s ratio':>11} {'p50 ratio':>9} | "
            f"{'gen cpu':>9} {'other cpu':>9}")
    print(head)
    print("-" * len(head))
    for name, concurrency, mine, peer in rows:
        print(f"{name:<8} {concurrency:>4} | {_side(mine, 15)} | {_side(peer, 10)} | "
              f"{mine.requests_per_s / peer.requests_per_s:>11.2f} {mine.p50_ms / peer.p50_ms:>9.2f} | "
              f"{_pair(mine.generator_cpu, peer.generator_cpu):>9} {_pair(mine.other_cpu, peer.other_cpu):>9}")
    print("\nreq/s ratio, p50 ratio: modelgate / bare (req/s 1.00 = no overhead over the HTTP stack). cpu: the server's "
          "use of its core;\ngen cpu: the load generator's use of its core; other cpu: what other processes and the "
          "kernel used meanwhile\n(cores; high values mean a noisy neighbour). Pairs are modelgate/bare.")
    print_warnings(rows)


def print_warnings(rows: list[tuple[str, int, CaseResult, CaseResult]]) -> None:
    """Say which cases had failed requests, or shared the machine with other busy processes."""
    for name, concurrency, mine, peer in rows:
        if max(mine.other_cpu, peer.other_cpu) > NOISY_NEIGHBOUR_CORES:
            print(f"WARNING: {name} c={concurrency}: other processes used {_pair(mine.other_cpu, peer.other_cpu)} of a "
                  "core meanwhile; these numbers are disturbed (rerun on a quiet machine, or with --repeat)")
        if mine.errors or peer.errors:
            print(f"ERRORS in {name} c={concurrency}: modelgate {mine.errors}, bare {peer.errors} (non-2xx, timeouts, "
                  "socket errors)")


def _side(result: CaseResult, width: int) -> str:
    return (f"{result.requests_per_s:>{width},.0f} {result.p50_ms:>7.3f} {result.p99_ms:>7.3f} "
            f"{_percent(result.server_cpu):>5}")


def _pair(mine: float, peer: float) -> str:
    return f"{_percent(mine)}/{_percent(peer)}"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _loop_name() -> str:
    installed = _version("uvloop")
    return "asyncio (uvloop not installed)" if installed == "not installed" else f"uvloop {installed}"


def _generator_name(generator: LoadGenerator) -> str:
    if generator.kind == "aiohttp":
        return "aiohttp fallback"
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (done.stdout + done.stderr).split(" Copyright")[0].strip() or "wrk"


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per case (wrk takes whole seconds)")
    parser.add_argument("--warmup", type=int, default=2, help="warmup seconds before each case (0: none)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="connections, one request each")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per case and server, alternating the servers; the run of median req/s is shown")
    parser.add_argument("--encodings", nargs="+", choices=["json", "binary"], default=["json", "binary"])
    parser.add_argument("--load-generator", choices=["auto", "wrk", "aiohttp"], default="auto",
                        help="auto: wrk if installed, else the aiohttp fallback")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of the servers and the load generator; e.g. -10 (root) on a shared machine, so "
                             "that other processes take less of the two cores")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    return parser.parse_args(argv)


def generator_kind(choice: str) -> str:
    if choice != "auto":
        return choice
    if shutil.which("wrk"):
        return "wrk"
    print("wrk not found (apt-get install wrk): falling back to the aiohttp load generator", file=sys.stderr)
    return "aiohttp"


def modelgate_command(repository: Path, port: int) -> list[str]:
    executable = shutil.which("modelgate")
    prefix = [executable] if executable else [sys.executable, "-m", "server.cli"]
    # Only add_sub: other models (an LLM engine with its busy loop, say) would share the server's core.
    command = [*prefix, "serve", "--model-repository", str(repository), "--model-control-mode", "explicit",
               "--load-model", MODEL, "--http-address", "127.0.0.1", "--http-port", str(port),
               "--metrics-port", str(free_port())]
    if "--grpc-port" in subprocess.run([*prefix, "serve", "--help"], capture_output=True, text=True).stdout:
        command += ["--grpc-address", "127.0.0.1", "--grpc-port", str(free_port())]  # never the default 8001
    return command


def start_servers(args: argparse.Namespace, encodings: list[Encoding], work_dir: Path,
                  stack: ExitStack) -> tuple[Server, Server, dict[str, RecordedResponse]]:
    """modelgate, checked and recorded; then the peer replaying its answers, checked byte for byte."""
    modelgate = _start_modelgate(args, work_dir)
    stack.callback(stop_server, modelgate)
    check_with_tritonclient(modelgate.port)
    responses = {e.name: post(modelgate.port, e) for e in encodings}
    for encoding in encodings:
        check_outputs(responses[encoding.name], encoding)
    bare = _start_bare_peer(args, responses, work_dir)
    stack.callback(stop_server, bare)
    for encoding in encodings:
        if post(bare.port, encoding) != responses[encoding.name]:
            raise AssertionError(f"the bare peer's {encoding.name} response differs from modelgate's")
    return modelgate, bare, responses


def _start_modelgate(args: argparse.Namespace, work_dir: Path) -> Server:
    port = free_port()
    command = modelgate_command(args.model_repository, port)
    return start_server("modelgate", command, port, args.server_core, args.nice, work_dir)


def _start_bare_peer(args: argparse.Namespace, responses: dict[str, RecordedResponse], work_dir: Path) -> Server:
    recorded = work_dir / "responses.json"
    recorded.write_text(json.dumps({name: r.as_json() for name, r in responses.items()}))
    port = free_port()
    command = [sys.executable, str(BENCHMARKS / "bare_http_peer.py"), "--port", str(port), "--responses", str(recorded)]
    return start_server("bare-peer", command, port, args.server_core, args.nice, work_dir)


def compare(generator: LoadGenerator, modelgate: Server, bare: Server, encoding: Encoding, concurrency: int,
            args: argparse.Namespace) -> tuple[CaseResult, CaseResult]:
    """(modelgate, bare) for one case; the servers alternate run by run so that drift hits both alike."""
    mine, peer = [], []
    for _ in range(args.repeat):
        mine.append(measure(generator, modelgate, encoding, concurrency, args.duration, args.warmup))
        peer.append(measure(generator, bare, encoding, concurrency, args.duration, args.warmup))
    return median_run(mine), median_run(peer)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.sched_setaffinity(0, {args.client_core})  # keep this script off the server's core
    encodings = [e for e in (json_encoding(), binary_encoding()) if e.name in args.encodings]
    with ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-add-sub-")))
        modelgate, bare, responses = start_servers(args, encodings, work_dir, stack)
        generator = LoadGenerator(generator_kind(args.load_generator), args.client_core, args.nice, work_dir)
        print_environment(args, generator, encodings, responses)
        rows = [(encoding.name, concurrency, *compare(generator, modelgate, bare, encoding, concurrency, args))
                for concurrency in args.concurrency for encoding in encodings]
        print_table(rows)
    return 1 if any(mine.errors or peer.errors for _, _, mine, peer in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
