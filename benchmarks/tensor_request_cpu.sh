#!/usr/bin/env bash
# The server's CPU per ResNet-sized tensor request (FP32 3x224x224 over gRPC), what issue 17's packed GPU
# serving is bound by: a TorchScript model that only averages its images (KIND_CPU, max_batch_size 32, dynamic
# batching), modelgate serve on core 0, perf_analyzer 2.51 (concurrency 16) on core 1. Prints perf_analyzer's
# infer/s and the server process's CPU (user + system, from /proc) per request it answered during the run.
#   bash benchmarks/tensor_request_cpu.sh [PYTHONPATH of another build, to compare]
# Needs perf_analyzer (clients/perf_analyzer/setup_perf_analyzer.sh; PERF_ANALYZER_HOME if not the default).
set -euo pipefail
cd "$(dirname "$0")/.."
repository=$(mktemp -d)
mkdir -p "$repository/mean_image/1"
python3 - "$repository" <<'PY'
import sys, warnings
from pathlib import Path
import torch

class MeanImage(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))

repository = Path(sys.argv[1])
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    # traced, not scripted: scripting reads the module's source, which a script on stdin does not have
    torch.jit.trace(MeanImage(), torch.zeros(1, 3, 224, 224)).save(str(repository / "mean_image" / "1" / "model.pt"))
(repository / "mean_image" / "config.pbtxt").write_text('''name: "mean_image"
backend: "pytorch"
max_batch_size: 32
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
''')
PY
log="$repository/server.log"
PYTHONPATH=${1:-${PYTHONPATH:-}} taskset -c 0 python3 -m modelgate serve --model-repository "$repository" \
  --http-port 18611 --grpc-port 18612 --metrics-port 18613 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$repository"' EXIT
for _ in $(seq 120); do grep -q "modelgate ready" "$log" && break; sleep 0.5; done
answered() { curl -s localhost:18613/metrics | awk '/^nv_inference_request_success\{/ {s += $2} END {print s + 0}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
requests_before=$(answered); ticks_before=$(cpu_ticks)
taskset -c 1 clients/perf_analyzer/run_perf_analyzer.sh -m mean_image -i grpc -u localhost:18612 \
  --concurrency-range 16 --measurement-interval 4000 >"$repository/perf_analyzer.txt" 2>&1
ticks_after=$(cpu_ticks); requests_after=$(answered)
grep -E "Concurrency: 16, throughput" "$repository/perf_analyzer.txt"
python3 -c "
requests = $requests_after - $requests_before
ticks = ($ticks_after - $ticks_before) / $(getconf CLK_TCK)
print(f'server CPU per request: {ticks / requests * 1e6:.0f} us ({requests} requests)')"
