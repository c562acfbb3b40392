#!/usr/bin/env bash
# The LLM's output tok/s alone, and with 4 ResNet-50s beside it on the same GPU serving perf_analyzer's load.
# A Llama-3-8B-shaped FP8 model (weights and KV cache), 128/128 at concurrency 128 over generate_stream; the
# ResNets' traffic is 4 perf_analyzers at concurrency 32 each (gRPC, FP32 3x224x224). Needs a GPU and
# perf_analyzer (clients/perf_analyzer/setup_perf_analyzer.sh). Writes logs under ${OUT:-/tmp/llm-beside}.
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint=${CHECKPOINT:-/tmp/modelgate-llama3-8b-random}
out=${OUT:-/tmp/llm-beside}
mkdir -p "$out"
[ -f "$checkpoint/config.json" ] || python3 benchmarks/llm_engine_vs_transformers.py --build-only --checkpoint "$checkpoint"

run_case() {  # $1 = label, $2 = number of ResNets beside the LLM
  repository=$(mktemp -d)
  python3 - "$repository" "$2" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from benchmarks.gpu_memory_packing import LLM_CONFIG, RESNETS, build_resnets
repository, count = Path(sys.argv[1]), int(sys.argv[2])
if count:
    build_resnets(repository)
    for name in RESNETS[count:]:
        import shutil; shutil.rmtree(repository / name)
(repository / "llama8b").mkdir()
(repository / "llama8b" / "config.pbtxt").write_text(LLM_CONFIG)
PY
  ln -s "$checkpoint" "$repository/llama8b/1"
  python3 -m modelgate serve --model-repository "$repository" --http-port 18000 --grpc-port 18001 \
    --metrics-port 18002 >"$out/server_$1.log" 2>&1 &
  server=$!
  for _ in $(seq 1 600); do
    curl -sf localhost:18000/v2/health/ready >/dev/null && break
    kill -0 $server 2>/dev/null || { tail -50 "$out/server_$1.log"; exit 1; }
    sleep 1
  done
  loads=()
  for i in $(seq 0 $(($2 - 1))); do
    clients/perf_analyzer/run_perf_analyzer.sh -m "resnet50_$i" -i grpc -u localhost:18001 --concurrency-range 32 \
      --measurement-interval 60000 --max-trials 1 >"$out/perf_analyzer_$1_$i.log" 2>&1 &
    loads+=($!)
  done
  [ "$2" -gt 0 ] && sleep 5
  python3 -m modelgate bench llm --url localhost:18000 -m llama8b --tokenizer "$checkpoint" --isl 128 --osl 128 \
    --concurrency 128 --num-requests 1024 --warmup-requests 16 --no-progress --output-dir "$out/bench_$1" \
    | tee "$out/summary_$1.txt"
  for pid in "${loads[@]}"; do kill "$pid" 2>/dev/null || true; done
  kill $server; wait $server 2>/dev/null || true
}

run_case alone 0
run_case beside_4_resnets 4
grep -H "output token throughput" "$out"/summary_*.txt
