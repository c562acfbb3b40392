#!/usr/bin/env bash
# Served vs engine alone at 128/128, concurrency 256 and 512, with one HTTP process and with --http-workers 4,
# in one device call (the engine alone runs once per concurrency, after the one-process runs, on their prompts).
# Logs go to ${OUT:-/tmp/llm-http-workers}.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llm-http-workers}
checkpoint=${CHECKPOINT:-/tmp/modelgate-llama3-8b-random}
mkdir -p "$out"
[ -f "$checkpoint/config.json" ] || python3 benchmarks/llm_engine_vs_transformers.py --build-only --checkpoint "$checkpoint" >/dev/null
runs="generate_stream:128/128:256:1000 generate_stream:128/128:512:1000"
timeout 240 python3 benchmarks/llm_served_vs_engine.py --checkpoint "$checkpoint" --out /tmp/llm-workers-4 \
  --http-workers 4 --skip-engine --runs $runs >"$out/served_workers4.log" 2>&1
cp /tmp/llm-workers-4/server.log "$out/server_workers4.log" 2>/dev/null
timeout 300 python3 benchmarks/llm_served_vs_engine.py --checkpoint "$checkpoint" --out /tmp/llm-workers-1 \
  --http-workers 1 --runs $runs >"$out/served_workers1.log" 2>&1
tail -n 12 "$out"/served_workers*.log
