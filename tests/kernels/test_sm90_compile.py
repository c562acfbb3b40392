"""The kernels that only the interpreter runs here compile for an H100 (sm_90): tests/kernels/sm90_compile.py in
a process of its own, without TRITON_INTERPRET (set for this directory's other tests). The TMA GEMM launched with
PDL must also hold the wait, the early launch and the weights' L2 prefetch in its PTX."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fused_silu_gemms_tma_gemms_and_fp8_attention_compile_for_sm90():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    finished = subprocess.run(
        [sys.executable, "-m", "tests.kernels.sm90_compile"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    lines = finished.stdout.splitlines()
    assert finished.returncode == 0, finished.stdout + finished.stderr[-2000:]
    assert len(lines) == 14 and all(": ok, " in line for line in lines), lines
