"""Time between dependent kernels in a CUDA graph, with and without programmatic dependent launch (PDL).

A batch-1 decode step is ~400 small kernels each of which depends on the previous one; the gap between
two of them (drain, launch, ramp-up) is paid ~400 times. This chains N tiny kernels (one 4096-element row
each, as an RMSNorm of one token) and N GEMV-sized kernels in one graph, and prints microseconds per
kernel with PDL off and on (Hopper: the next kernel's programs start while the previous one drains and wait
at griddepcontrol.wait).

    python benchmarks/pdl_launch_gap.py
"""

from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl


@triton.jit
def _row_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(y_ptr + offs, x * 0.5 + 1.0, mask=offs < n)


def chain_us(n_kernels: int, elements: int, block: int, use_pdl: bool) -> float:
    a = torch.ones(elements, device="cuda")
    b = torch.empty_like(a)

    def run():
        for i in range(n_kernels):
            src, dst = (a, b) if i % 2 == 0 else (b, a)
            _row_kernel[(triton.cdiv(elements, block),)](
                src, dst, elements, BLOCK=block, USE_PDL=use_pdl, launch_pdl=use_pdl
            )

    run()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(20):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / n_kernels)
    return sorted(times)[len(times) // 2]


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing measured")
        return 0
    print(f"{torch.cuda.get_device_name()}, triton {triton.__version__}")
    print(f"{'case':<34}{'no PDL us':>10}{'PDL us':>9}")
    for name, elements, block in (
        ("1 program x 4096 (norm of 1 token)", 4096, 4096),
        ("528 programs x 1024", 528 * 1024, 1024),
        ("132 programs x 64K (~34 MB)", 132 * 65536, 65536),
    ):
        off = chain_us(400, elements, block, False)
        on = chain_us(400, elements, block, True)
        print(f"{name:<34}{off:>10.2f}{on:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
