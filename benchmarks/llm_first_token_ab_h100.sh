#!/usr/bin/env bash
# One device call: the engine's time to first token and its prefill step (llm_ttft_breakdown.py) with this tree's
# modelgate and with an older build given as OLD_WHEEL (A/B on one machine), each with start-up objects frozen
# (as the engine process runs) and without; then TTFT through the server against input length.
# GPU_TESTS=1 runs the GPU tests of CUDA shared memory, CUDA graphs and fresh prefills first.
# Logs go to ${OUT:-/tmp/llm-first-token-ab}.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llm-first-token-ab}
checkpoint=${CHECKPOINT:-/tmp/modelgate-llama3-8b-random}
mkdir -p "$out"
if [ -n "${GPU_TESTS:-}" ]; then
  timeout 170 python3 -m pytest -q -m gpu tests/server/shared_memory tests/backends/llm/test_triton_cuda_graphs.py \
    tests/backends/llm/test_fresh_prefill.py >"$out/gpu_tests.log" 2>&1
  tail -n 4 "$out/gpu_tests.log"
fi
[ -f "$checkpoint/config.json" ] || python3 benchmarks/llm_engine_vs_transformers.py --build-only --checkpoint "$checkpoint" >/dev/null
breakdown="benchmarks/llm_ttft_breakdown.py --checkpoint $checkpoint --isls 128 1024 --settings fp8"
[ -n "${OLD_WHEEL:-}" ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_old "$OLD_WHEEL"
for gc in frozen unfrozen; do
  flag=""; [ $gc = unfrozen ] && flag="--no-gc-freeze"
  timeout 100 python3 $breakdown $flag >"$out/ttft_breakdown_new_$gc.log" 2>&1
  if [ -n "${OLD_WHEEL:-}" ]; then
    PYTHONPATH=/tmp/site_old:${PYTHONPATH:-} timeout 100 python3 $breakdown $flag >"$out/ttft_breakdown_old_$gc.log" 2>&1
  fi
done
timeout 150 python3 benchmarks/llm_ttft_vs_isl.py --checkpoint "$checkpoint" --requests 3 --isls 128 1024 4096 \
  --out "$out/ttft_vs_isl" >"$out/ttft_vs_isl.log" 2>&1
for f in "$out"/ttft_breakdown_*.log; do echo "## $(basename "$f")"; grep -E "ISL|prefill step" "$f"; done
tail -n 8 "$out/ttft_vs_isl.log"
