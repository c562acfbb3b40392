"""The LLM GPU fast path's figures side by side, from the logs of one round of benchmarks/fp8_fast_path_h100.sh.

A device call is limited to 10 minutes, so the parts run separately (`micro`, `fp8`, `bf16`, `transformers`)
and write their logs to one directory; this prints, from those logs:
  (a) FP8 GEMM TFLOP/s against torch._scaled_mm at each M (and the M = 1 GEMV the engine runs);
  (b) decode attention GB/s against the copy and read-only bandwidths measured in the same run;
  (c) the decode step against its floor, and output tokens/s per ISL/OSL for FP8, bf16 and transformers.
A missing log is reported as missing.

    python benchmarks/fp8_fast_path_report.py [LOG_DIR]      # default benchmarks/results
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

GEMM_ROW = re.compile(r"^(qkv|o|gate_up|down)\s+(\d+)\s+\d+\s+\d+\s+\S+ s\d w\d k\d\s+(.*)$")
THROUGHPUT_ROW = re.compile(r"^(\d+/\d+)\s+(modelgate fp8|modelgate bf16|transformers bf16)\s+(\d+)")
# transformers' own line per pattern says how many requests it ran (fewer than 1000: see the script)
TRANSFORMERS_RUN = re.compile(r"^transformers \d+/\d+: .*requests")


def lines_of(log_dir: Path, name: str) -> list[str] | None:
    path = log_dir / name
    return path.read_text().splitlines() if path.is_file() else None


def gemm_section(log_dir: Path) -> list[str]:
    lines = lines_of(log_dir, "fp8_gemm_h100.log")
    if lines is None:
        return ["(a) fp8_gemm_h100.log missing"]
    out = [
        "(a) FP8 GEMM, TFLOP/s (benchmarks/fp8_gemm.py): ours = the GEMM on fp8 activations; M = 1 also the GEMV",
        f"{'layer':8}{'M':>6}{'ours':>9}{'scaled_mm':>11}{'ours/sm':>9}{'gemv':>8}{'gemv/sm':>9}{'spread':>8}",
    ]
    for line in lines:
        match = GEMM_ROW.match(line)
        if not match:
            continue
        layer, m, rest = match.groups()
        cells = rest.split()
        # ours ours+q fused precise sc_mm vs_sm fast vs_fast bf16 bw% spread err [gemv gemv_vs_sm]
        gemv, gemv_ratio = (cells[12], cells[13]) if len(cells) >= 14 else ("-", "-")
        out.append(f"{layer:8}{m:>6}{cells[0]:>9}{cells[4]:>11}{cells[5]:>9}{gemv:>8}{gemv_ratio:>9}{cells[10]:>8}")
    return out


def attention_section(log_dir: Path) -> list[str]:
    lines = lines_of(log_dir, "decode_attention_h100.log")
    if lines is None:
        return ["(b) decode_attention_h100.log missing"]
    out = ["(b) decode attention, batch 64 (benchmarks/decode_attention.py)"]
    out += [line for line in lines if line.startswith(("copy bandwidth", "batch "))][:2]
    summary = [i for i, line in enumerate(lines) if line.startswith("summary")]
    if summary:
        out += [line for line in lines[summary[-1] + 1 :] if line.strip()]
    return out


def decode_step_section(log_dir: Path) -> list[str]:
    lines = lines_of(log_dir, "llm_decode_step_h100.log")
    if lines is None:
        return ["(c) llm_decode_step_h100.log missing"]
    start = [i for i, line in enumerate(lines) if line.startswith("Llama-3-8B-shaped, context")]
    return ["(c) decode step against its floor (benchmarks/llm_decode_step.py)"] + (
        lines[start[-1] :] if start else ["no summary table in the log"]
    )


def throughput_section(log_dir: Path) -> list[str]:
    figures: dict[str, dict[str, str]] = {}
    missing, notes = [], []
    for part in ("fp8", "bf16", "transformers"):
        lines = lines_of(log_dir, f"llm_throughput_{part}_h100.log")
        if lines is None:
            missing.append(part)
            continue
        notes += [line for line in lines if TRANSFORMERS_RUN.match(line)]
        for line in lines:
            match = THROUGHPUT_ROW.match(line)
            if match:
                pattern, system, tokens = match.groups()
                figures.setdefault(pattern, {})[system] = tokens
    systems = ("modelgate fp8", "modelgate bf16", "transformers bf16")
    out = [
        "(c) output tokens/s per ISL/OSL (benchmarks/llm_engine_vs_transformers.py; modelgate: 1000 requests each)",
        f"{'ISL/OSL':<11}" + "".join(f"{s:>19}" for s in systems) + f"{'fp8 / HF':>10}",
    ]
    for pattern, row in figures.items():
        cells = [row.get(s, "-") for s in systems]
        ratio = f"{int(cells[0]) / int(cells[2]):.1f}" if "-" not in (cells[0], cells[2]) else "-"
        out.append(f"{pattern:<11}" + "".join(f"{c:>19}" for c in cells) + f"{ratio:>10}")
    if missing:
        out.append(f"missing logs: {', '.join(missing)}")
    return out + notes


def main() -> int:
    log_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results"
    for section in (gemm_section, attention_section, decode_step_section, throughput_section):
        print("\n".join(section(log_dir)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
