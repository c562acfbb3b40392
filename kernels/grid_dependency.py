"""Programmatic dependent launch (PDL) and L2 prefetch: start the next kernel's weight reads before this one ends.

A batch-1 decode step is a chain of small kernels, each waiting for the one before. Between two of them the
GPU drains, launches and ramps up again, and during the latency-bound ones (attention, RMSNorm, rotary)
memory bandwidth sits idle while the next linear's weights, which depend on nothing, wait to be read.

On Hopper a kernel launched with PDL (`launch_pdl=True`) may start while the kernel before it still runs:
its programs run up to `griddepcontrol.wait` (`wait_for_previous_kernel`), which returns once the previous
kernel has finished and its writes are visible. Before that point a kernel may only read data that no kernel
of the chain writes: the weights. `prefetch_rows_to_l2` asks the L2 cache for such bytes with one bulk
prefetch per chunk (`cp.async.bulk.prefetch.L2`, a hint that returns at once), so that the loads after the
wait hit L2 instead of memory.

Contract of a PDL-launched kernel (checked by reading, not at run time): nothing before
`wait_for_previous_kernel` reads anything but immutable inputs, and nothing before it writes. A kernel
launched without PDL makes the wait a no-op, so the same code serves both launches. The previous kernel lets
its dependents launch early with `allow_dependents_to_launch` (without it they launch when it exits).

Neither instruction exists under the Triton interpreter or before sm_90: launchers pass the constexpr flags
from `pdl_supported`, and the helpers compile to nothing when the flag is off.
"""

from __future__ import annotations

import functools

import torch

from modelgate.kernels.fp8_quant import HAS_TRITON, tl, triton

# Bulk prefetches need 16-byte aligned addresses and sizes.
PREFETCH_ALIGNMENT = 16


def pdl_supported(kernel, device: torch.device) -> bool:
    """True when `kernel` launches compiled on a Hopper-or-newer GPU (PDL and bulk L2 prefetch exist there)."""
    if not HAS_TRITON or device.type != "cuda" or type(kernel).__name__ == "InterpretedFunction":
        return False
    return _hopper_or_newer(device)


@functools.cache
def _hopper_or_newer(device: torch.device) -> bool:
    # Cached: launchers ask on every (eager) launch, once per layer and step.
    return torch.cuda.get_device_capability(device) >= (9, 0)


@triton.jit
def wait_for_previous_kernel(PDL: tl.constexpr):
    """Block until the previous kernel of the stream has finished (its writes visible); then let the next
    kernel launch. A no-op when PDL is off or the kernel was launched without PDL."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        # After the wait, not before: a chain of PDL kernels then runs at most one kernel ahead, instead of
        # filling the GPU with programs that all wait.
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def allow_dependents_to_launch(PDL: tl.constexpr):
    """Let the next kernel (if launched with PDL) start now, while this one runs (it still waits for this
    kernel to finish before reading what it wrote)."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def prefetch_rows_to_l2(
    base_ptr, first_row, num_rows, row_stride, col_start, nbytes, ROWS: tl.constexpr, CHUNKS: tl.constexpr
):
    """Hint L2 to fetch bytes [col_start, col_start + nbytes) of rows first_row .. first_row + ROWS - 1 (those
    below num_rows) of a one-byte-per-element matrix (FP8 weights) at base_ptr.

    Each row's span is cut into CHUNKS bulk prefetches (ROWS * CHUNKS of them, one per thread when that is
    the program's thread count). Needs 16-byte aligned base_ptr, row_stride and col_start (the launcher
    checks); nbytes is rounded down to a multiple of 16, the rest is not prefetched (a hint may miss bytes).
    """
    i = tl.arange(0, ROWS * CHUNKS)
    rows = first_row + i // CHUNKS
    span = (nbytes // 16) * 16
    chunk = tl.cdiv(tl.cdiv(span, CHUNKS), 16) * 16
    start = (i % CHUNKS) * chunk
    size = tl.minimum(tl.maximum(span - start, 0), chunk)
    size = tl.where(rows < num_rows, size, 0)
    addresses = (base_ptr + rows.to(tl.int64) * row_stride + col_start + start).to(tl.int64)
    tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.u32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
        "=r,l,r",
        [addresses, size.to(tl.int32)],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )
