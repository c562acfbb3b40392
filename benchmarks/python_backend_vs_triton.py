"""The python backend against Triton 2.51's C++ server: `add_sub` over HTTP JSON and gRPC (issue 15).

For each server setting, one after the other, the script builds a model repository holding a copy
of the example `add_sub` python model, starts the server on it pinned to one core, checks it with
tritonclient (HTTP and gRPC), and loads it from another core with `add_sub_load.py`, the same
closed-loop generator for every server (warm-up, then a fixed duration per protocol; every
answer's values checked). The settings:

- modelgate, `python -m modelgate serve`, once per `--isolation` mode: the model parameter
  `isolation` (`thread`: the model on an instance thread of the server process; `process`: in a
  process of its own) is set in the copy's config.pbtxt;
- Triton, `tritonserver` 2.51 with its python backend (every instance in a stub process), set up
  and run by `../shared/peers/triton-cpp/` (setup.sh once, then run.sh). Without it there is
  nothing to compare with: the script says why and exits with status 2;
- with `--grpc-floor`, gRPC only: `bare_grpc_peer.py`, grpcio's threaded server (modelgate's gRPC
  transport) answering add_sub in its handler thread, the most a Python gRPC server reaches on that core.

It prints one table: server, isolation, protocol, req/s, p50 and p99 latency, and req/s as a
ratio to Triton's on the same protocol. Exit status 1 when any request failed or was answered
wrongly.

    python benchmarks/python_backend_vs_triton.py --duration 10 --warmup 3 --rounds 3 --json /tmp/add_sub_vs_triton.json

With `--rounds N` every setting is measured N times, the settings taking turns, and the summary takes each
case's median: on a machine whose speed drifts (a VM), one pass can favour whichever server ran in a fast spell.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bare_grpc_peer  # noqa: E402
from benchmarks.add_sub_repository import ISOLATION_MODES, build_repository  # noqa: E402
from benchmarks.add_sub_requests import check_with_tritonclient, check_with_tritonclient_grpc  # noqa: E402
from benchmarks.http_add_sub_report import cpu_model, package_version  # noqa: E402
from benchmarks.pinned_server import Server, free_port, start_server, stop_server  # noqa: E402
from benchmarks.protocol_case import CaseLoad, measure  # noqa: E402
from benchmarks.python_backend_report import (  # noqa: E402
    PEER,
    Row,
    has_failures,
    median_rows,
    report_lines,
    table_lines,
    write_json,
)
from benchmarks.triton_peer import DEFAULT_SCRIPTS, PeerUnavailable, TritonPeer  # noqa: E402

PROTOCOLS = ("http", "grpc")
GRPC_FLOOR = "grpcio alone"  # the server name of --grpc-floor rows


@dataclass(frozen=True)
class Setting:
    """One server under test: which server, and where its python model runs."""

    server: str  # "modelgate" or PEER
    isolation: str  # modelgate: the config's isolation parameter; Triton: "process" (its stub, always)


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per case (default: 10)")
    parser.add_argument(
        "--warmup", type=float, default=3, help="warm-up seconds before each case, 0: none (default: 3)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight, closed loop (default: 16)")
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument(
        "--isolation",
        nargs="+",
        choices=ISOLATION_MODES,
        default=list(ISOLATION_MODES),
        help="modelgate rows: the python model's isolation parameter (default: thread process)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every setting this many times, interleaved; the summary takes each case's median (default: 1)",
    )
    parser.add_argument(
        "--grpc-floor",
        action="store_true",
        help="also measure grpcio's threaded server answering add_sub in its handler (gRPC only): the transport's limit",
    )
    parser.add_argument("--json", type=Path, help="also write the rows (and the setup) to this JSON file")
    parser.add_argument("--server-core", type=int, default=0, help="core of every server (default: 0)")
    parser.add_argument(
        "--client-core", type=int, default=1, help="core of the load generator and this script (default: 1)"
    )
    parser.add_argument(
        "--nice", type=int, default=0, help="niceness of servers and generator, e.g. -10 as root (default: 0)"
    )
    parser.add_argument(
        "--triton-scripts", type=Path, default=DEFAULT_SCRIPTS, help=f"setup.sh and run.sh (default: {DEFAULT_SCRIPTS})"
    )
    parser.add_argument(
        "--triton-install",
        type=Path,
        help="where setup.sh unpacks tritonserver (default: $TRITON_PEER or /tmp/triton-peer)",
    )
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> list[Setting]:
    """Triton first, so that a peer that does not start fails the run before anything is measured."""
    floor = [Setting(GRPC_FLOOR, "-")] if args.grpc_floor and "grpc" in args.protocols else []
    return [Setting(PEER, "process"), *(Setting("modelgate", isolation) for isolation in args.isolation), *floor]


def start(setting: Setting, peer: TritonPeer, work_dir: Path, ports: Ports, args: argparse.Namespace) -> Server:
    """The server of `setting` on a fresh repository, ready and answering `add_sub` right over HTTP and gRPC
    (the gRPC floor: over gRPC; it has no repository)."""
    if setting.server == GRPC_FLOOR:
        command = [
            sys.executable,
            bare_grpc_peer.__file__,
            "--grpc-port",
            str(ports.grpc),
            "--http-port",
            str(ports.http),
        ]
        server = start_server("grpc-floor", command, ports.http, args.server_core, args.nice, work_dir)
        try:
            check_with_tritonclient_grpc(ports.grpc)
        except BaseException:
            stop_server(server)
            raise
        return server
    name = f"{setting.server}-{setting.isolation}"
    isolation = None if setting.server == PEER else setting.isolation
    repository = build_repository(work_dir, name, isolation)
    if setting.server == PEER:
        command, env = peer.command(ports.http, ports.grpc, ports.metrics), peer.env(repository)
    else:
        command, env = modelgate_command(repository, ports), None
    server = start_server(name, command, ports.http, args.server_core, args.nice, work_dir, env)
    try:
        check_with_tritonclient(ports.http)
        check_with_tritonclient_grpc(ports.grpc)
    except BaseException:
        stop_server(server)
        raise
    return server


def modelgate_command(repository: Path, ports: Ports) -> list[str]:
    return [
        sys.executable,
        "-m",
        "modelgate",
        "serve",
        "--model-repository",
        str(repository),
        "--http-address",
        "127.0.0.1",
        "--http-port",
        str(ports.http),
        "--grpc-address",
        "127.0.0.1",
        "--grpc-port",
        str(ports.grpc),
        "--metrics-port",
        str(ports.metrics),
    ]


def measure_setting(
    setting: Setting, peer: TritonPeer, work_dir: Path, args: argparse.Namespace
) -> tuple[list[Row], str]:
    """Start the setting's server, measure each protocol, stop it; the rows and the server's version."""
    ports = Ports.free()
    try:
        server = start(setting, peer, work_dir, ports, args)
    except Exception as error:
        if setting.server != PEER:
            raise
        raise PeerUnavailable(f"tritonserver did not start or did not answer add_sub right:\n{error}") from error
    try:
        server_version = _server_version(ports.http)
        protocols = ["grpc"] if setting.server == GRPC_FLOOR else args.protocols
        rows = [_measure_row(setting, server, _load(protocol, ports, args)) for protocol in protocols]
    finally:
        stop_server(server)
    return rows, server_version


def _measure_row(setting: Setting, server: Server, load: CaseLoad) -> Row:
    print(f"measuring {setting.server} {setting.isolation} {load.protocol} ...", file=sys.stderr, flush=True)
    return Row(setting.server, setting.isolation, load.protocol, measure(server, load))


def _load(protocol: str, ports: Ports, args: argparse.Namespace) -> CaseLoad:
    port = ports.http if protocol == "http" else ports.grpc
    return CaseLoad(protocol, port, args.concurrency, args.duration, args.warmup, args.client_core, args.nice)


def _server_version(http_port: int) -> str:
    """`name version` from the KServe v2 server metadata (GET /v2)."""
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    connection.request("GET", "/v2")
    metadata = json.loads(connection.getresponse().read())
    return f"{metadata.get('name')} {metadata.get('version')}"


def environment(args: argparse.Namespace, server_versions: dict[str, str]) -> dict:
    """What the run ran on, printed above the table and written to the JSON file."""
    packages = ("tritonclient", "grpcio", "aiohttp", "uvloop", "numpy")
    return {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "servers": server_versions,
        "client_packages": {name: package_version(name) for name in packages},
        "server_core": args.server_core,
        "client_core": args.client_core,
        "nice": args.nice,
        "concurrency": args.concurrency,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
    }


def print_environment(env: dict) -> None:
    print(f"machine: {env['machine']}; Python {env['python']}")
    print("servers: " + "; ".join(f"{setting}: {name}" for setting, name in env["servers"].items()))
    print(
        f"pinning (taskset): each server (one at a time) on core {env['server_core']}; the load generator "
        f"(benchmarks/add_sub_load.py: {', '.join(f'{k} {v}' for k, v in env['client_packages'].items())}) "
        f"and this script on core {env['client_core']}" + (f"; all under nice -n {env['nice']}" if env["nice"] else "")
    )
    print(
        f"per case: {env['warmup_s']:g} s warm-up, then {env['duration_s']:g} s measured; closed loop, "
        f"concurrency {env['concurrency']}; http = KServe v2 JSON; every answer's values checked\n"
    )


def run(args: argparse.Namespace, peer: TritonPeer) -> int:
    rounds: list[list[Row]] = []
    server_versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-python-backend-") as work_dir:
        for number in range(args.rounds):
            round_dir = Path(work_dir) / f"round{number}"
            round_dir.mkdir()
            rows: list[Row] = []
            for setting in settings(args):
                setting_rows, server_versions[f"{setting.server} {setting.isolation}"] = measure_setting(
                    setting, peer, round_dir, args
                )
                rows += setting_rows
            rounds.append(rows)
    env = environment(args, server_versions)
    print_environment(env)
    summary = median_rows(rounds)
    if len(rounds) > 1:
        for number, rows in enumerate(rounds, 1):
            print(f"round {number} of {len(rounds)}:")
            print("\n".join(table_lines(rows)) + "\n")
        print(f"median of the {len(rounds)} rounds (per case, the round with the median req/s):")
    print("\n".join(report_lines(summary)))
    if args.json:
        write_json(args.json, summary, env, rounds if len(rounds) > 1 else None)
    return 1 if any(has_failures(rows) for rows in rounds) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.sched_setaffinity(0, {args.client_core})  # keep this script off the servers' core
    peer = TritonPeer(args.triton_scripts, args.triton_install)
    try:
        peer.ensure_set_up()
        return run(args, peer)
    except PeerUnavailable as error:
        print(
            f"ERROR: the Triton peer is unavailable, so nothing can be compared; no results.\n{error}", file=sys.stderr
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
