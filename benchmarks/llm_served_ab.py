"""Served LLM throughput of two builds of modelgate on one machine, runs alternating: an A/B that a change to the
engine or the server must pass where the engine-alone figures cannot tell (serving's mixed steps, its CPU).

Each build is a folder that holds an installed `modelgate` package (`pip install --target DIR modelgate-*.whl`),
put first on PYTHONPATH for its runs; `--b` left out is the environment's own modelgate. Every round runs
benchmarks/llm_served_vs_engine.py --skip-engine once per build, the order swapped each round (A B, B A, ...),
so drift of the machine falls on both. Prints each run's output tok/s per round and per build, and B / A of
their means.

    pip install --target /tmp/site_old old/modelgate-*.whl
    python benchmarks/llm_served_ab.py --a /tmp/site_old --rounds 2 -- --runs generate_stream:128/128:256:1000
    python benchmarks/llm_served_ab.py --a /tmp/site_old --tiny --rounds 1      # on the CPU: a smoke run
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# llm_served_vs_engine.py prints one of these per run: "generate_stream-128-128-c256: 18,137 output tok/s"
RUN_LINE = re.compile(r"^(?P<run>[\w.-]+): (?P<rate>[\d,.]+) output tok/s$", re.MULTILINE)


def served_rates(output: str) -> dict[str, float]:
    """{run name: output tok/s} from llm_served_vs_engine.py's printed lines."""
    return {m["run"]: float(m["rate"].replace(",", "")) for m in RUN_LINE.finditer(output)}


def run_build(site: str | None, passthrough: list[str], out: Path) -> dict[str, float]:
    """One llm_served_vs_engine.py --skip-engine run with `site` first on PYTHONPATH (None: as is)."""
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "benchmarks/llm_served_vs_engine.py", "--skip-engine", "--out", str(out), *passthrough]
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    (out.parent / f"{out.name}.log").write_text(finished.stdout + finished.stderr)
    if finished.returncode != 0:
        raise SystemExit(f"{out.name}: llm_served_vs_engine.py failed ({finished.returncode}); see {out}.log")
    return served_rates(finished.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="folder holding build A's installed modelgate (the baseline)")
    parser.add_argument("--b", default=None, help="folder holding build B's (default: this environment's)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each build, alternating")
    parser.add_argument("--tiny", action="store_true", help="tiny_llm on the CPU (passed on)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/llm-served-ab"))
    parser.add_argument("passthrough", nargs=argparse.REMAINDER, help="after --: llm_served_vs_engine.py's options")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    passthrough = [a for a in args.passthrough if a != "--"] + (["--tiny"] if args.tiny else [])
    builds = {"A": args.a, "B": args.b}
    args.out.mkdir(parents=True, exist_ok=True)
    rates: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for round_index in range(args.rounds):
        for name in ("A", "B") if round_index % 2 == 0 else ("B", "A"):
            rates[name].append(run_build(builds[name], passthrough, args.out / f"{name}-{round_index}"))
            print(f"round {round_index} {name}: {rates[name][-1]}", flush=True)
    print(f"\nA = {args.a}, B = {args.b or 'this environment'}; output tok/s per round (alternating order)")
    print("| run | A | B | B / A |\n| --- | --- | --- | --- |")
    for run in rates["A"][0]:
        a = [r[run] for r in rates["A"] if run in r]
        b = [r[run] for r in rates["B"] if run in r]
        ratio = (sum(b) / len(b)) / (sum(a) / len(a)) if a and b else float("nan")
        print(f"| {run} | {', '.join(f'{x:,.0f}' for x in a)} | {', '.join(f'{x:,.0f}' for x in b)} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
