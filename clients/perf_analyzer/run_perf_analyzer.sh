#!/usr/bin/env bash
# Runs the perf_analyzer that setup_perf_analyzer.sh unpacked, with its CUDA runtime on the
# library path; all arguments go to perf_analyzer unchanged.
#   clients/perf_analyzer/run_perf_analyzer.sh -m add_sub -i grpc -u localhost:8001
set -euo pipefail

CACHE_DIR="${PERF_ANALYZER_HOME:-$HOME/.cache/modelgate/perf_analyzer}"
if [ ! -x "$CACHE_DIR/bin/perf_analyzer" ]; then
  echo "perf_analyzer is not set up: run $(dirname "$0")/setup_perf_analyzer.sh first" >&2
  exit 1
fi
export LD_LIBRARY_PATH="$CACHE_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$CACHE_DIR/bin/perf_analyzer" "$@"
