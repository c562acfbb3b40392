"""FP8-weight GEMV for a single token (M = 1): the batch-1 decode's linears, bound by reading the weights.

The tensor-core GEMM (kernels/fp8_gemm.py) pads one token to a 16-row tile and, with 64-column tiles, gives
qkv and o fewer programs than the H100 has SMs: it read their weights at 36-45% of the memory bandwidth.
Here every program reduces BLOCK_N weight rows over a slice of K with CUDA-core FMAs, and K is split so that
there are about `programs_per_sm` programs per SM.

    out[n] = w_scale[n] * sum_k w[n, k] * x[k]  (* x_scale when x is FP8)  (+ bias[n])

x is the token's activations in bf16/fp16/fp32 (no quantization: more exact than the GEMM's per-token FP8,
and one launch fewer) or already FP8 with its per-token scale (a fused norm's output).

Split-K is reduced inside the same launch ("serial split-K"), not by a second kernel (a ~1.6 us launch per
linear in a CUDA-graph decode step): every program stores its fp32 partial sums, then increments its row
block's int32 counter; the program that arrives last (count == SPLIT_K - 1) sums the SPLIT_K partials in the
fixed order 0..SPLIT_K-1 (deterministic, whichever program came last), applies the scales and bias, writes the
output and sets the counter back to 0. The counters (`split_k_counters`) are one zeroed buffer per device
that every launch leaves zeroed again.

With silu_and_mul=True the weight is a fused gate | up projection [2 * I, K]: each program reduces BLOCK_N gate
rows n and the up rows n + I, and the epilogue writes silu(gate) * up, [1, I] (the Llama MLP's activation at
one token, without the [1, 2 * I] round trip and the activation kernel's launch).
With norm=InputNorm(...) the input row is rms_norm(x (+ residual)), computed by every program (the whole row's
mean square from L2, then its own K slice normalized as kernels/rms_norm.py rounds it): the batch-1 decode's
norm launches go away; program (0, 0) writes the new residual.

On Hopper the launch uses programmatic dependent launch (kernels/grid_dependency.py): each program reads its
first weight tile before waiting for the previous kernel, and with prefetch_weights L2-prefetches its whole
slice there too (o_proj after the attention, which leaves memory idle).
`fp8_gemv_reference` (kernels/fp8_gemv_args.py, with the argument checks) is the plain-torch version (with
silu_and_mul: kernels.silu_and_mul's reference of it).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from modelgate.kernels.fp8_gemv_args import InputNorm, check_gemv_args, check_norm
from modelgate.kernels.fp8_gemv_epilogue import sum_partials, write_output
from modelgate.kernels.fp8_quant import (
    FP8_DTYPE,
    check_launchable,
    is_interpreted,
    tl,
    triton,
)
from modelgate.kernels.gemm_tiles import num_sms_of
from modelgate.kernels.grid_dependency import (
    PREFETCH_ALIGNMENT,
    pdl_supported,
    prefetch_rows_to_l2,
    wait_for_previous_kernel,
)
from modelgate.kernels.rms_norm import add_residual, inverse_rms, normalize
from modelgate.kernels.split_counters import split_counters

MAX_SPLIT_K = 16
# Counters per device: one per row block of a split launch. 2^16 covers N up to 1M rows at block_n = 16
# (Llama 3 70B's gate_up: 57344 rows, 3584 blocks) for 256 KB of device memory.
NUM_COUNTERS = 1 << 16


class GemvConfig(NamedTuple):
    block_n: int = 32  # weight rows per program (gate rows, each with its up row, under silu_and_mul)
    block_k: int = 512  # bytes of each row per step: 16 KB of weights per step and program
    num_warps: int = 8
    programs_per_sm: int = 3  # K is split until the grid has this many programs per SM
    # Hopper: launch with programmatic dependent launch (kernels/grid_dependency.py): the first weight tile is
    # read while the previous kernel still runs.
    pdl: bool = True


# 32 rows x 3 programs per SM: the fastest batch-1 decode chain of an 8B model on the H100 among 16, 32 and 64
# rows and 2 to 4 programs per SM (benchmarks/decode_layer_chain.py); with silu_and_mul, 16 gate + 16 up rows.
DEFAULT_CONFIG = GemvConfig()
SILU_DEFAULT_CONFIG = DEFAULT_CONFIG._replace(block_n=DEFAULT_CONFIG.block_n // 2)


@triton.jit
def _input_rstd(
    x_ptr,
    residual_ptr,
    new_residual_ptr,
    K,
    eps,
    writes_residual,
    HAS_RESIDUAL: tl.constexpr,
    K_POW2: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
):
    """NORM: 1 / rms of the whole input row x (+ residual); one program also stores the sum (the new residual).
    Every program computes it: 2 x K elements from L2, instead of a norm kernel's launch before this one."""
    ks = tl.arange(0, K_POW2)
    mask = ks < K
    h = tl.load(x_ptr + ks, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        dtype = x_ptr.dtype.element_ty
        h = add_residual(h, tl.load(residual_ptr + ks, mask=mask, other=0.0).to(tl.float32), dtype, ROUND_IN_FP32)
        if writes_residual:
            tl.store(new_residual_ptr + ks, h.to(dtype), mask=mask)
    return inverse_rms(tl.sum(h * h, axis=0), K, eps)


@triton.jit
def _input_slice(
    x_ptr,
    residual_ptr,
    norm_weight_ptr,
    k,
    k_mask,
    rstd,
    NORM: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
):
    """The linear's input at columns k, fp32: x, or (NORM) kernels/rms_norm.py's output for them."""
    x = tl.load(x_ptr + k, mask=k_mask, other=0.0).to(tl.float32)
    if NORM:
        dtype = x_ptr.dtype.element_ty
        if HAS_RESIDUAL:
            x = add_residual(x, tl.load(residual_ptr + k, mask=k_mask, other=0.0).to(tl.float32), dtype, ROUND_IN_FP32)
        weight = tl.load(norm_weight_ptr + k, mask=k_mask, other=0.0).to(tl.float32)
        x = normalize(x, rstd, weight, dtype, ROUND_IN_FP32).to(tl.float32)
    return x


@triton.jit
def _fp8_gemv_kernel(
    x_ptr,  # [K] activations (X_IS_FP8: e4m3)
    x_scale_ptr,  # [1] float32 (X_IS_FP8)
    w_ptr,  # [N, K] float8_e4m3fn, unit column stride; SILU_AND_MUL: N = 2 * N_OUT, gate rows then up rows
    w_scale_ptr,  # [N] float32
    bias_ptr,  # [N] (HAS_BIAS)
    out_ptr,  # [N_OUT] output
    partials_ptr,  # [SPLIT_K, N] float32 partial sums (SPLIT_K > 1)
    counters_ptr,  # [cdiv(N_OUT, BLOCK_N)] int32, 0 at launch; left 0 (SPLIT_K > 1)
    N_OUT,  # output columns: N, or N / 2 with SILU_AND_MUL
    K,
    stride_w,
    k_per_split,
    X_IS_FP8: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SILU_AND_MUL: tl.constexpr,  # out[n] = silu(row n) * row (n + N_OUT), rounded like kernels/silu_and_mul.py
    SPLIT_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
    PDL: tl.constexpr,  # launched with programmatic dependent launch: wait before reading x
    PREFETCH: tl.constexpr,  # L2-prefetch the program's whole weight slice before that wait
    PREFETCH_CHUNKS: tl.constexpr,  # bulk prefetches per row (BLOCK_N * PREFETCH_CHUNKS = the thread count)
    residual_ptr,  # [K] (NORM and HAS_RESIDUAL), x's dtype
    norm_weight_ptr,  # [K] (NORM), x's dtype
    new_residual_ptr,  # [K] (NORM and HAS_RESIDUAL): x + residual, written by program (0, 0)
    eps,  # (NORM)
    NORM: tl.constexpr,  # the linear's input is rms_norm(x (+ residual)), computed here (see InputNorm)
    HAS_RESIDUAL: tl.constexpr,
    K_POW2: tl.constexpr,  # (NORM) K rounded up to a power of two: the whole row, for its mean square
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N_OUT
    k_start = pid_k * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    if PREFETCH:  # the weights: no kernel writes them, so they may be read before the wait
        span = k_end - k_start
        prefetch_rows_to_l2(w_ptr, pid_n * BLOCK_N, N_OUT, stride_w, k_start, span, BLOCK_N, PREFETCH_CHUNKS)
        if SILU_AND_MUL:
            prefetch_rows_to_l2(
                w_ptr, pid_n * BLOCK_N + N_OUT, 2 * N_OUT, stride_w, k_start, span, BLOCK_N, PREFETCH_CHUNKS
            )
    cols = tl.arange(0, BLOCK_K)
    w_rows = w_ptr + rows.to(tl.int64)[:, None] * stride_w
    up_rows = w_ptr + (rows + N_OUT).to(tl.int64)[:, None] * stride_w
    # The first weight tile is loaded before the wait (with PDL, while the previous kernel still runs): the
    # memory latency of a kernel's first loads is off the chain's critical path. Every split is non-empty.
    k = k_start + cols
    w_mask = row_mask[:, None] & (k < k_end)[None, :]
    w_tile = tl.load(w_rows + k[None, :], mask=w_mask, other=0.0)
    up_tile = w_tile
    if SILU_AND_MUL:
        up_tile = tl.load(up_rows + k[None, :], mask=w_mask, other=0.0)
    wait_for_previous_kernel(PDL)
    rstd = 0.0
    if NORM:
        rstd = _input_rstd(
            x_ptr, residual_ptr, new_residual_ptr, K, eps, (pid_n + pid_k) == 0, HAS_RESIDUAL, K_POW2, ROUND_IN_FP32
        )
    x = _input_slice(x_ptr, residual_ptr, norm_weight_ptr, k, k < k_end, rstd, NORM, HAS_RESIDUAL, ROUND_IN_FP32)
    acc = tl.sum(w_tile.to(tl.float32) * x[None, :], axis=1)
    acc_up = tl.zeros([BLOCK_N], tl.float32)
    if SILU_AND_MUL:
        acc_up = tl.sum(up_tile.to(tl.float32) * x[None, :], axis=1)
    # The loop's loads are software-pipelined by the compiler (a hand-written double buffer in registers, and a
    # conditional load inside the loop, both measured 20% slower on the H100).
    for k0 in range(k_start + BLOCK_K, k_end, BLOCK_K):
        k = k0 + cols
        k_mask = k < k_end
        w_mask = row_mask[:, None] & k_mask[None, :]
        w = tl.load(w_rows + k[None, :], mask=w_mask, other=0.0).to(tl.float32)
        x = _input_slice(x_ptr, residual_ptr, norm_weight_ptr, k, k_mask, rstd, NORM, HAS_RESIDUAL, ROUND_IN_FP32)
        acc += tl.sum(w * x[None, :], axis=1)
        if SILU_AND_MUL:
            w_up = tl.load(up_rows + k[None, :], mask=w_mask, other=0.0).to(tl.float32)
            acc_up += tl.sum(w_up * x[None, :], axis=1)
    if SPLIT_K == 1:
        write_output(
            acc,
            acc_up,
            rows,
            row_mask,
            N_OUT,
            x_scale_ptr,
            w_scale_ptr,
            bias_ptr,
            out_ptr,
            X_IS_FP8,
            HAS_BIAS,
            SILU_AND_MUL,
            ROUND_IN_FP32,
        )
    else:
        N = 2 * N_OUT if SILU_AND_MUL else N_OUT
        p_ptrs = partials_ptr + rows
        tl.store(p_ptrs + pid_k * N, acc, mask=row_mask)
        if SILU_AND_MUL:
            tl.store(p_ptrs + N_OUT + pid_k * N, acc_up, mask=row_mask)
        # Every thread's partial stores must happen before the counter increment, which Triton issues from one
        # thread (tid 0) for the program: the barrier orders them within the program, the increment's release
        # (atomic_add is acq_rel, gpu scope) publishes them to the program that sees the last count, whose
        # acquire (then the barrier that broadcasts the count) orders its reads of the partials after them.
        tl.debug_barrier()
        count = tl.atomic_add(counters_ptr + pid_n, 1)
        if count == SPLIT_K - 1:  # the others have all stored theirs (the interpreter: pid_k == SPLIT_K - 1)
            acc = sum_partials(p_ptrs, row_mask, N, SPLIT_K)
            if SILU_AND_MUL:
                acc_up = sum_partials(p_ptrs + N_OUT, row_mask, N, SPLIT_K)
            write_output(
                acc,
                acc_up,
                rows,
                row_mask,
                N_OUT,
                x_scale_ptr,
                w_scale_ptr,
                bias_ptr,
                out_ptr,
                X_IS_FP8,
                HAS_BIAS,
                SILU_AND_MUL,
                ROUND_IN_FP32,
            )
            # Nobody touches this counter again in this launch (all SPLIT_K programs have counted): the next
            # launch, or CUDA-graph replay, starts from 0.
            tl.store(counters_ptr + pid_n, 0)


def plan_split_k(N: int, K: int, num_sms: int, config: GemvConfig = DEFAULT_CONFIG) -> int:
    """Splits of K so that ceil(N / block_n) * splits reaches programs_per_sm per SM, each split at least
    two block_k steps long."""
    row_programs = triton.cdiv(N, config.block_n)
    wanted = triton.cdiv(config.programs_per_sm * num_sms, row_programs)
    return max(1, min(MAX_SPLIT_K, wanted, K // (2 * config.block_k)))


def split_k_counters(device: torch.device) -> torch.Tensor:
    """The split-K counters of `device`: int32 [NUM_COUNTERS], zero between fp8_gemv launches.

    fp8_gemv's own buffer of kernels/split_counters.py (never shared with another kernel's counters), created
    by the first split call on the device, which must not be inside a CUDA-graph capture: such a call raises
    RuntimeError instead of capturing a broken launch. The model runner's eager warm-up (and the eager run
    before each capture) creates it; call this once before capturing to be independent of that.

    One buffer per device, shared by all streams: launches that use it must not overlap, i.e. fp8_gemv runs on
    one stream per device (the engine's, whose graphs also replay on it) and is not launched with programmatic
    dependent launch. Concurrent calls on two streams could mix their counts.
    """
    return split_counters("fp8_gemv", device, NUM_COUNTERS)


def fp8_gemv(
    x: torch.Tensor,  # [1, K] bf16/fp16/fp32, or float8_e4m3fn with x_scale
    w_fp8: torch.Tensor,  # [N, K] float8_e4m3fn, unit column stride
    w_scales: torch.Tensor,  # [N] float32
    bias: torch.Tensor | None = None,  # [N]
    x_scale: torch.Tensor | None = None,  # [1] float32, only for an FP8 x
    out_dtype: torch.dtype | None = None,  # default x's dtype (bfloat16 for an FP8 x)
    config: GemvConfig | None = None,  # tuning; default DEFAULT_CONFIG (SILU_DEFAULT_CONFIG with silu_and_mul)
    silu_and_mul: bool = False,  # w_fp8 is gate | up [2 * I, K]: return silu(gate) * up, [1, I]
    norm: InputNorm | None = None,  # multiply rms_norm(x (+ residual)) instead of x
    prefetch_weights: bool = False,  # the kernel before leaves memory idle (attention): read the weights then
) -> torch.Tensor:  # [1, N], or [1, N / 2] with silu_and_mul
    """One token through an FP8-weight linear, in one launch; ValueError on wrong shapes, dtypes, strides or
    devices. Deterministic: the same inputs give the same bits whatever order the programs run in.

    silu_and_mul: out = silu(gate) * up of the linear's output gate | up, with every rounding of the unfused
    path (this GEMV to out_dtype, then kernels.silu_and_mul): gate and up, then silu, then the product, each
    rounded to out_dtype. K is split as for the whole [2 * I, K] weight, so gate and up are the unfused sums.
    Split launches use the device's shared counters: see split_k_counters (one stream; before graph capture).

    norm: the input row is normalized here (InputNorm), with the rounding of kernels.rms_norm's bf16 output;
    the norm's mean square sums in another order than rms_norm's, so the result may differ from rms_norm then
    this GEMV by an output ULP. On Hopper the launch uses PDL (config.pdl); prefetch_weights also L2-prefetches
    every program's whole weight slice before it waits for the previous kernel.
    """
    what = "fp8_gemv"
    is_fp8 = x.dtype == FP8_DTYPE
    check_gemv_args(x, w_fp8, w_scales, bias, x_scale, is_fp8, what)
    if norm is not None:
        check_norm(x, norm, what)
    norm_tensors = () if norm is None else (norm.weight, norm.residual, norm.new_residual)
    tensors = [t for t in (x, w_fp8, w_scales, bias, x_scale, *norm_tensors) if t is not None]
    check_launchable(_fp8_gemv_kernel, what, *tensors)
    N, K = w_fp8.shape
    if silu_and_mul and N % 2:
        raise ValueError(f"{what}: silu_and_mul needs an even number of weight rows (gate | up), got N={N}")
    n_out = N // 2 if silu_and_mul else N
    config = config or (SILU_DEFAULT_CONFIG if silu_and_mul else DEFAULT_CONFIG)
    out_dtype = out_dtype or (torch.bfloat16 if is_fp8 else x.dtype)
    out = torch.empty((1, n_out), dtype=out_dtype, device=x.device)
    # Planned on all N rows: a program of the fused epilogue reads both its gate and its up rows, so the
    # weight bytes per program and split are those of the plain GEMV over [2 * I, K].
    split_k = plan_split_k(N, K, num_sms_of(x.device), config)
    k_per_split = triton.cdiv(triton.cdiv(K, split_k), config.block_k) * config.block_k
    split_k = triton.cdiv(K, k_per_split)  # every split non-empty
    row_blocks = triton.cdiv(n_out, config.block_n)
    if split_k > 1:
        if row_blocks > NUM_COUNTERS:
            raise ValueError(
                f"{what}: {row_blocks} row blocks of {config.block_n} exceed the {NUM_COUNTERS} "
                f"split-K counters; use a larger config.block_n"
            )
        partials = torch.empty((split_k, N), dtype=torch.float32, device=x.device)
        counters = split_k_counters(x.device)
    else:
        partials = counters = out  # not read
    supported = pdl_supported(_fp8_gemv_kernel, x.device)
    pdl = config.pdl and supported
    prefetch = supported and prefetch_weights and _prefetchable(w_fp8)
    threads = 32 * config.num_warps
    has_residual = norm is not None and norm.residual is not None
    _fp8_gemv_kernel[(row_blocks, split_k)](
        x,
        x_scale if is_fp8 else w_scales,
        w_fp8,
        w_scales,
        w_scales if bias is None else bias,
        out,
        partials,
        counters,
        n_out,
        K,
        w_fp8.stride(0),
        k_per_split,
        X_IS_FP8=is_fp8,
        HAS_BIAS=bias is not None,
        SILU_AND_MUL=silu_and_mul,
        SPLIT_K=split_k,
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        ROUND_IN_FP32=is_interpreted(_fp8_gemv_kernel),
        PDL=pdl,
        PREFETCH=prefetch,
        PREFETCH_CHUNKS=max(1, threads // config.block_n),
        residual_ptr=norm.residual if has_residual else w_scales,
        norm_weight_ptr=w_scales if norm is None else norm.weight,
        new_residual_ptr=norm.new_residual if has_residual else w_scales,
        eps=0.0 if norm is None else norm.eps,
        NORM=norm is not None,
        HAS_RESIDUAL=has_residual,
        K_POW2=triton.next_power_of_2(K),
        num_warps=config.num_warps,
        launch_pdl=pdl,
    )
    return out


def _prefetchable(w_fp8: torch.Tensor) -> bool:
    """Bulk L2 prefetches need 16-byte aligned row starts (split starts are multiples of block_k)."""
    return w_fp8.data_ptr() % PREFETCH_ALIGNMENT == 0 and w_fp8.stride(0) % PREFETCH_ALIGNMENT == 0
