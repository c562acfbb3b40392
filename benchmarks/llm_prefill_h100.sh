#!/usr/bin/env bash
# Fresh prefills through FlashAttention (backends/llm/attention/fresh_prefill.py) on a GPU, in one device call:
#   1. prefill_attention.py: the paged Triton kernel and torch's varlen_attn against the matmul rate;
#   2. the GPU tests of the dense path (torch's varlen_attn against the paged kernel, bf16 and FP8 caches);
#   3. served vs engine alone at 128/128 and concurrency 512 (decode graphs now cover every batch to max_num_seqs);
#   4. TTFT against input length at concurrency 1, against the FLOP floor of the same call.
# Logs go to ${OUT:-/tmp/llm-prefill}; each step has a time limit so that the call fits ten minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llm-prefill}
checkpoint=${CHECKPOINT:-/tmp/modelgate-llama3-8b-random}
mkdir -p "$out"
python3 -c "import inspect, torch; from torch.nn.attention.varlen import varlen_attn; print(torch.__version__, inspect.signature(varlen_attn))" \
  >"$out/varlen_signature.txt" 2>&1
timeout 90 python3 benchmarks/prefill_attention.py >"$out/prefill_attention.log" 2>&1
timeout 120 python3 -m pytest -q -m gpu tests/backends/llm/test_fresh_prefill.py tests/backends/llm/test_triton_attention.py \
  >"$out/gpu_tests.log" 2>&1
[ -f "$checkpoint/config.json" ] || python3 benchmarks/llm_engine_vs_transformers.py --build-only --checkpoint "$checkpoint" >/dev/null
timeout 230 python3 benchmarks/llm_served_vs_engine.py --checkpoint "$checkpoint" --out /tmp/llm-prefill-served \
  --runs generate_stream:128/128:512:1000 >"$out/served_c512.log" 2>&1
timeout 130 python3 benchmarks/llm_ttft_vs_isl.py --checkpoint "$checkpoint" --requests 3 --isls 128 1024 4096 \
  --out /tmp/llm-prefill-ttft >"$out/ttft_vs_isl.log" 2>&1
cp /tmp/llm-prefill-ttft/ttft_vs_isl.png "$out/" 2>/dev/null
tail -n 20 "$out"/*.log "$out/varlen_signature.txt"
