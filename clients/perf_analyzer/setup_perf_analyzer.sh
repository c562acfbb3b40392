#!/usr/bin/env bash
# Puts NVIDIA's perf_analyzer (from the tritonclient 2.51.0 wheel) and the libraries it links
# against into a cache folder, outside the project's Python environment, then prints the path
# of the wrapper that runs it. Safe to run again: each step is skipped when its result exists.
#
# Why 2.51.0: it is the newest wheel whose perf_analyzer runs on glibc 2.36 (Debian 12); later
# ones need glibc 2.38. The project itself uses a newer tritonclient, so the wheel is only
# unpacked here, never pip-installed.
set -euo pipefail

TRITONCLIENT_VERSION=2.51.0
# Any CUDA 12 runtime satisfies libcudart.so.12; perf_analyzer loads it even with no GPU.
CUDART_VERSION=12.6.77
CACHE_DIR="${PERF_ANALYZER_HOME:-$HOME/.cache/modelgate/perf_analyzer}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

mkdir -p "$CACHE_DIR/wheels" "$CACHE_DIR/bin" "$CACHE_DIR/lib"

# libb64 is a system library (Debian package libb64-0d), not shipped in the wheel.
if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libb64-0d >&2
fi

# --platform/--only-binary pick the manylinux x86_64 wheel whatever pip's own tags say.
fetch_wheel() {  # $1 = requirement, $2 = file glob
  if ! compgen -G "$CACHE_DIR/wheels/$2" >/dev/null; then
    python3 -m pip download -q --no-deps "$1" --only-binary=:all: \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$CACHE_DIR/wheels" >&2
  fi
  compgen -G "$CACHE_DIR/wheels/$2" | head -n1
}

if [ ! -x "$CACHE_DIR/bin/perf_analyzer" ]; then
  wheel="$(fetch_wheel "tritonclient[all]==$TRITONCLIENT_VERSION" "tritonclient-$TRITONCLIENT_VERSION-*manylinux*x86_64.whl")"
  # The binary sits in the wheel under .data/data/bin/ (pip would put it in the venv bin/);
  # -j drops that path. Nothing else in the wheel is needed.
  unzip -o -q -j "$wheel" "tritonclient-$TRITONCLIENT_VERSION.data/data/bin/perf_analyzer" -d "$CACHE_DIR/bin"
  chmod +x "$CACHE_DIR/bin/perf_analyzer"
fi

if [ ! -e "$CACHE_DIR/lib/libcudart.so.12" ]; then
  wheel="$(fetch_wheel "nvidia-cuda-runtime-cu12==$CUDART_VERSION" "nvidia_cuda_runtime_cu12-$CUDART_VERSION-*x86_64.whl")"
  unzip -o -q -j "$wheel" "nvidia/cuda_runtime/lib/libcudart.so.12" -d "$CACHE_DIR/lib"
fi

# Fail here, not at benchmark time, if a library is still missing.
if LD_LIBRARY_PATH="$CACHE_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$CACHE_DIR/bin/perf_analyzer" | grep -q 'not found'; then
  echo "setup_perf_analyzer.sh: perf_analyzer still misses libraries:" >&2
  LD_LIBRARY_PATH="$CACHE_DIR/lib" ldd "$CACHE_DIR/bin/perf_analyzer" | grep 'not found' >&2
  exit 1
fi

echo "$HERE/run_perf_analyzer.sh"
