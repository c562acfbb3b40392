#!/usr/bin/env bash
# The LLM GPU fast path on one H100, in parts that each fit a 10-minute device call:
#   bash benchmarks/fp8_fast_path_h100.sh micro        # GPU tests, (a) FP8 GEMM, (b) decode attention, (c) decode step
#   bash benchmarks/fp8_fast_path_h100.sh bf16         # (c) engine throughput, bf16, 3 ISL/OSL patterns x 1000 requests
#   bash benchmarks/fp8_fast_path_h100.sh fp8          # (c) the same with FP8 weights + FP8 KV
#   bash benchmarks/fp8_fast_path_h100.sh transformers # (c) transformers generate, 128/128 and 2048/128, 1000 requests
#   bash benchmarks/fp8_fast_path_h100.sh transformers-long  # (c) transformers 1000/1000: 520 requests (8 batches
#                                                      #     of 65) fit a call; 1000 would take ~15 minutes
#   bash benchmarks/fp8_fast_path_h100.sh report       # (a), (b), (c) side by side from the logs (any machine)
# Logs go to $LOG_DIR (default benchmarks/results).
set -u
part=${1:?part: micro, bf16, fp8 or transformers}
log_dir=${LOG_DIR:-benchmarks/results}
mkdir -p "$log_dir"
patterns=(128/128 1000/1000 2048/128)
if [ "$part" = report ]; then
  exec python3 benchmarks/fp8_fast_path_report.py "$log_dir"
fi
python3 benchmarks/llm_engine_vs_transformers.py --build-only >"$log_dir/build.log" 2>&1
case $part in
  micro)
    python3 -m pytest -q -m gpu -p no:cacheprovider tests/kernels tests/backends/llm \
      --ignore tests/backends/llm/serving >"$log_dir/gpu_tests_h100.log" 2>&1
    tail -3 "$log_dir/gpu_tests_h100.log"
    python3 benchmarks/fp8_gemm.py --m 1 16 64 256 4096 >"$log_dir/fp8_gemm_h100.log" 2>&1
    python3 benchmarks/decode_attention.py --quick >"$log_dir/decode_attention_h100.log" 2>&1
    python3 benchmarks/fp8_gemv.py >"$log_dir/fp8_gemv_h100.log" 2>&1
    python3 benchmarks/llm_decode_step.py --compare-ahead >"$log_dir/llm_decode_step_h100.log" 2>&1
    ;;
  bf16 | fp8)
    python3 benchmarks/llm_engine_vs_transformers.py --num-requests 1000 --patterns "${patterns[@]}" \
      --settings "$part" --skip-transformers >"$log_dir/llm_throughput_${part}_h100.log" 2>&1
    ;;
  transformers)
    python3 benchmarks/llm_engine_vs_transformers.py --num-requests 1000 --patterns 128/128 2048/128 \
      --skip-modelgate --transformers-requests 1000 >"$log_dir/llm_throughput_transformers_h100.log" 2>&1
    ;;
  transformers-long)
    python3 benchmarks/llm_engine_vs_transformers.py --num-requests 1000 --patterns 1000/1000 \
      --skip-modelgate --transformers-requests 520 >>"$log_dir/llm_throughput_transformers_h100.log" 2>&1
    ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
esac
