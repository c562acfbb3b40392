"""The HTTP benchmarks' closed-loop load generator: wrk with a Lua script, or the aiohttp fallback.

Either one POSTs one fixed body over keep-alive connections (one request in flight per
connection) for a number of seconds, pinned to its own core, and prints one line

    RESULT requests=N duration_us=D p50_us=X p99_us=Y errors=E

that `LoadGenerator.run` reads back. The fallback is `aiohttp_load.py`, much slower than wrk.
"""

from __future__ import annotations

import json
import shutil
import string
import subprocess
import sys
from pathlib import Path

from benchmarks import aiohttp_load
from benchmarks.add_sub_requests import Encoding
from benchmarks.pinned_server import pinned

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


class LoadGenerator:
    """Runs one closed-loop load (wrk, or the aiohttp fallback) pinned to `core`."""

    def __init__(self, kind: str, core: int, niceness: int, work_dir: Path):
        self.kind = kind
        self.core = core
        self.niceness = niceness
        self.work_dir = work_dir

    def run(self, url: str, encoding: Encoding, concurrency: int, duration_s: int) -> dict[str, float]:
        """Fields of the generator's RESULT line: requests, duration_us, p50_us, p99_us, errors."""
        return run_result(self.kind, self._command(url, encoding, concurrency, duration_s), self.core, self.niceness)

    def describe(self) -> str:
        """The generator's name and version, for the table's header."""
        if self.kind == "aiohttp":
            return "aiohttp fallback"
        done = subprocess.run(["wrk", "-v"], check=False, capture_output=True, text=True)
        return (done.stdout + done.stderr).split(" Copyright")[0].strip() or "wrk"

    def _command(self, url: str, encoding: Encoding, concurrency: int, duration_s: int) -> list[str]:
        body_path = self.work_dir / f"{encoding.name}.body"
        body_path.write_bytes(encoding.body)
        if self.kind == "aiohttp":
            headers = [arg for k, v in encoding.headers.items() for arg in ("--header", f"{k}: {v}")]
            return [
                sys.executable,
                aiohttp_load.__file__,
                "--url",
                url,
                "--body-file",
                str(body_path),
                *headers,
                "--concurrency",
                str(concurrency),
                "--duration",
                str(duration_s),
            ]
        script = self.work_dir / f"{encoding.name}.lua"
        script.write_text(wrk_script(body_path, encoding.headers))
        return ["wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--timeout", "10s", "-s", str(script), url]


def run_result(name: str, command: list[str], core: int, niceness: int) -> dict[str, float]:
    """Run a load generator pinned to `core`; the fields of the RESULT line it printed last; its stderr goes to ours."""
    done = subprocess.run(pinned(command, core, niceness), check=False, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    if done.stderr.strip():  # e.g. the first failed request, which a RESULT line only counts
        print(f"{name}: {done.stderr.strip()}", file=sys.stderr)
    return {key: float(value) for key, value in (f.split("=") for f in lines[-1].split()[1:])}


def wrk_script(body_path: Path, headers: dict[str, str]) -> str:
    """The Lua script that makes wrk POST the bytes in `body_path` with `headers`."""
    lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    return WRK_SCRIPT.substitute(body_path=json.dumps(str(body_path)), header_lines="\n".join(lines))


def generator_kind(choice: str) -> str:
    """`choice` ("auto", "wrk", "aiohttp") made concrete: auto is wrk where it is on PATH."""
    if choice != "auto":
        return choice
    if shutil.which("wrk"):
        return "wrk"
    print("wrk not found (apt-get install wrk): falling back to the aiohttp load generator", file=sys.stderr)
    return "aiohttp"
