#!/usr/bin/env bash
# `modelgate bench llm` against `modelgate serve` hosting a Llama-3-8B-shaped model with random bf16 weights:
# the four ISL/OSL classes mixed, 64 concurrent streams over generate_stream. Needs a GPU (run it through the
# device tool); writes the summary, JSON, CSV and plots under ${OUT:-/tmp/llm-serving-bench}.
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint=${CHECKPOINT:-/tmp/modelgate-llama3-8b-random}
out=${OUT:-/tmp/llm-serving-bench}
mkdir -p "$out"
[ -f "$checkpoint/config.json" ] || python3 benchmarks/llm_engine_vs_transformers.py --build-only --checkpoint "$checkpoint"

repository=$(mktemp -d)
mkdir -p "$repository/llama8b"
ln -s "$checkpoint" "$repository/llama8b/1"
cat > "$repository/llama8b/config.pbtxt" <<'CONFIG'
name: "llama8b"
backend: "llm"
parameters { key: "max_num_seqs" value { string_value: "256" } }
parameters { key: "max_num_batched_tokens" value { string_value: "16384" } }
parameters { key: "max_model_len" value { string_value: "4096" } }
parameters { key: "gpu_memory_utilization" value { string_value: "0.85" } }
parameters { key: "show_progress" value { string_value: "false" } }
CONFIG

python3 -m modelgate serve --model-repository "$repository" --http-port 18000 --allow-grpc false \
  --metrics-port 18002 >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf localhost:18000/v2/models/llama8b/ready >/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$out/server.log"; exit 1; }
  sleep 1
done

python3 -m modelgate bench llm --url localhost:18000 -m llama8b --tokenizer "$checkpoint" --pattern mix \
  --short-isl 128 --long-isl 1024 --short-osl 128 --long-osl 512 --concurrency 64 --num-requests 256 \
  --warmup-requests 8 --no-progress --output-dir "$out" | tee "$out/summary.txt"
curl -s localhost:18002/metrics | grep -E "^modelgate_llm_(kv_cache_usage|num_preemptions|prefix_cache_hit_rate)" \
  | tee -a "$out/summary.txt"
