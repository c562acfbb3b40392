#!/usr/bin/env bash
# One device call: piecewise step graphs (backends/llm/step_graphs.py) against eager prefills on one GPU.
#   1. GPU tests of the step graphs and the decode graphs (captured and replayed for real);
#   2. the engine's time to first token and its prefill step (llm_ttft_breakdown.py), graphs on
#      (--cuda-graph-max-num-tokens 1024, the default) and off (0), alternating;
#   3. engine throughput at 128/128 (FP8 weights and KV), graphs on and off.
# REQUESTS (default 1000) per throughput run, ROUNDS (default 2) of the TTFT A/B. Logs go to ${OUT:-/tmp/llm-step-graphs}.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llm-step-graphs}
checkpoint=${CHECKPOINT:-/tmp/modelgate-llama3-8b-random}
requests=${REQUESTS:-1000}
rounds=${ROUNDS:-2}
mkdir -p "$out"
timeout 200 python3 -m pytest -q -m gpu tests/backends/llm/test_step_graphs.py tests/backends/llm/test_triton_cuda_graphs.py \
  >"$out/gpu_tests.log" 2>&1
tail -n 3 "$out/gpu_tests.log"
[ -f "$checkpoint/config.json" ] || python3 benchmarks/llm_engine_vs_transformers.py --build-only --checkpoint "$checkpoint" >/dev/null
breakdown="benchmarks/llm_ttft_breakdown.py --checkpoint $checkpoint --isls 128 512 1024 --settings fp8 --repeats 5"
for round in $(seq "$rounds"); do
  timeout 120 python3 $breakdown --cuda-graph-max-num-tokens 1024 >"$out/ttft_breakdown_graphs_$round.log" 2>&1
  timeout 120 python3 $breakdown --cuda-graph-max-num-tokens 0 >"$out/ttft_breakdown_eager_$round.log" 2>&1
done
for f in "$out"/ttft_breakdown_*.log; do echo "## $(basename "$f")"; grep -E "ISL|prefill step|captured|Error" "$f"; done
throughput="benchmarks/llm_engine_vs_transformers.py --checkpoint $checkpoint --settings fp8 --patterns 128/128 \
  --num-requests $requests --skip-transformers --max-num-seqs 256 --max-num-batched-tokens 8192"
timeout 150 python3 $throughput --cuda-graph-max-num-tokens 1024 >"$out/throughput_graphs.log" 2>&1
timeout 150 python3 $throughput --cuda-graph-max-num-tokens 0 >"$out/throughput_eager.log" 2>&1
for f in "$out"/throughput_*.log; do echo "## $(basename "$f")"; tail -n 6 "$f"; done
