"""`modelgate serve` as the soak runs it: a process of its own on a throwaway repository, on free ports.

A process rather than a thread of the soak's own, so that its resident memory is the server's alone (the
clients build 10 MB prompts too). The repository holds copies of the example models: add_sub, the tiny LLM,
and optionally the ensemble add_sub -> add_batch_dim -> batched_scale.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.pinned_server import ROOT, Server, free_port, stop_server, wait_ready
from benchmarks.soak_target import Target, rss_mb

EXAMPLES = ROOT / "model_repository"
MODELS = ("add_sub", "tiny_llm")
ENSEMBLE_MODELS = ("ensemble_add_sub_scale", "add_batch_dim", "batched_scale")
MAX_INPUT_SIZE = 16 << 20  # --http-max-input-size: room for a 10 MB prompt; a body past it costs 16 MiB to send


def build_repository(repository: Path, with_ensemble: bool) -> Path:
    for name in MODELS + ENSEMBLE_MODELS * with_ensemble:
        shutil.copytree(EXAMPLES / name, repository / name, ignore=shutil.ignore_patterns("__pycache__"))
    return repository


@contextmanager
def serving(work_dir: Path, with_ensemble: bool = True) -> Iterator[tuple[Server, Target]]:
    """Start the server on a repository built in `work_dir` (its log there too); stop it on leaving."""
    repository = build_repository(work_dir / "models", with_ensemble)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    command = [sys.executable, "-m", "modelgate", "serve", "--model-repository", str(repository)]
    command += ["--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1", "--http-port", str(http_port)]
    command += ["--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    command += ["--http-max-input-size", str(MAX_INPUT_SIZE)]
    log_path = work_dir / "modelgate.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    server = Server("modelgate", process, http_port, log_path)
    try:
        wait_ready(server)
        yield (
            server,
            Target(
                f"127.0.0.1:{http_port}",
                f"127.0.0.1:{grpc_port}",
                f"http://127.0.0.1:{metrics_port}/metrics",
                has_ensemble=with_ensemble,
                max_input_size=MAX_INPUT_SIZE,
            ),
        )
    finally:
        stop_server(server)


def tree_rss_mb(server: Server) -> float:
    """Resident memory of the server and its processes (LLM engine, python-model stubs), in MiB.

    Pages they share are counted once per process: a figure to watch for growth, not a total of RAM used.
    """
    total = 0.0
    for pid in server.process_ids():
        try:
            total += rss_mb(pid)
        except (OSError, RuntimeError):  # exited meanwhile, or a zombie
            continue
    return total
