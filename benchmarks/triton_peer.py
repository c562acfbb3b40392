"""Triton Inference Server 2.51 (C++) as a benchmark peer: set it up once, and the command that runs it.

The scripts live outside the checkout, in `../shared/peers/triton-cpp/` (README there): `setup.sh`
unpacks the `tritonserver` binary and its python backend from the `nvidia-pytriton` 0.7 wheel into
`$TRITON_PEER` (default /tmp/triton-peer), `run.sh` runs it on `$MODEL_REPO`. A benchmark that
compares with Triton has no result without it, so a peer that cannot be set up is an error
(`PeerUnavailable`), never a silently skipped row.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCRIPTS = ROOT.parent / "shared" / "peers" / "triton-cpp"
DEFAULT_INSTALL = Path("/tmp/triton-peer")
SETUP_TIMEOUT_S = 900


class PeerUnavailable(Exception):
    """The Triton peer is missing and could not be set up; the message says why and what to do."""


class TritonPeer:
    """Where the peer's scripts are and where it is (or will be) unpacked."""

    def __init__(self, scripts: Path = DEFAULT_SCRIPTS, install: Path | None = None):
        self.scripts = scripts
        self.install = install or Path(os.environ.get("TRITON_PEER", DEFAULT_INSTALL))

    def is_set_up(self) -> bool:
        """What run.sh needs: the site file setup.sh writes last, and the server binary it links."""
        return (self.install / "site").is_file() and (self.install / "dist" / "tritonserver").exists()

    def ensure_set_up(self) -> None:
        """Run setup.sh unless the peer is already unpacked; raise `PeerUnavailable` if that fails."""
        if self.is_set_up():
            return
        setup = self.scripts / "setup.sh"
        if not setup.is_file():
            raise PeerUnavailable(f"{setup} not found: pass --triton-scripts DIR (the folder of setup.sh and run.sh)")
        print(f"setting up the Triton peer in {self.install} with {setup} (once, ~1-2 minutes) ...", flush=True)
        done = _run_setup(setup, self._env())
        if done.returncode != 0 or not self.is_set_up():
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise PeerUnavailable(
                f"{setup} failed (exit status {done.returncode}); it installs nvidia-pytriton==0.7.0 with pip, "
                f"so it needs a package index (network). Its last lines:\n{tail}"
            )

    def command(self, http_port: int, grpc_port: int, metrics_port: int) -> list[str]:
        """run.sh with tritonserver's port flags; run it with `env()` (MODEL_REPO)."""
        return [
            "bash",
            str(self.scripts / "run.sh"),
            f"--http-port={http_port}",
            f"--grpc-port={grpc_port}",
            f"--metrics-port={metrics_port}",
        ]

    def env(self, repository: Path) -> dict[str, str]:
        """The environment run.sh reads: the repository to serve and where the peer is unpacked."""
        return {**self._env(), "MODEL_REPO": str(repository)}

    def _env(self) -> dict[str, str]:
        return {**os.environ, "TRITON_PEER": str(self.install)}


def _run_setup(setup: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["bash", str(setup)], env=env, capture_output=True, text=True, timeout=SETUP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as expired:
        raise PeerUnavailable(f"{setup} did not finish in {SETUP_TIMEOUT_S} s (no network?)") from expired
