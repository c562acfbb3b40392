#!/usr/bin/env bash
# One device call: (1) the GPU tests of steps queued ahead and fresh prefills, (2) the engine's own time to first
# token and its prefill step (llm_ttft_breakdown.py), (3) TTFT through the server against input length,
# (4) served at 128/128 concurrency 256 with --http-workers 4 over generate_stream and gRPC.
# Logs go to ${OUT:-/tmp/llm-first-token}.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llm-first-token}
checkpoint=${CHECKPOINT:-/tmp/modelgate-llama3-8b-random}
mkdir -p "$out"
timeout 150 python3 -m pytest -q -m gpu tests/backends/llm/test_triton_cuda_graphs.py tests/backends/llm/test_fresh_prefill.py \
  >"$out/gpu_tests.log" 2>&1
[ -f "$checkpoint/config.json" ] || python3 benchmarks/llm_engine_vs_transformers.py --build-only --checkpoint "$checkpoint" >/dev/null
timeout 90 python3 benchmarks/llm_ttft_breakdown.py --checkpoint "$checkpoint" --isls 128 1024 --settings fp8 \
  >"$out/ttft_breakdown.log" 2>&1
timeout 130 python3 benchmarks/llm_ttft_vs_isl.py --checkpoint "$checkpoint" --requests 3 --isls 128 1024 4096 \
  --out /tmp/llm-first-token-ttft >"$out/ttft_vs_isl.log" 2>&1
timeout 180 python3 benchmarks/llm_served_vs_engine.py --checkpoint "$checkpoint" --out /tmp/llm-first-token-w4 \
  --http-workers 4 --skip-engine --runs generate_stream:128/128:256:1000 grpc:128/128:256:1000 \
  >"$out/served_workers4.log" 2>&1
tail -n 8 "$out/gpu_tests.log"; grep -E "ISL|prefill step" "$out/ttft_breakdown.log"; tail -n 6 "$out/ttft_vs_isl.log"
tail -n 5 "$out/served_workers4.log"
