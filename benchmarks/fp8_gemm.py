"""FP8 W8A8 GEMM on the GPU: kernels.fp8_gemm against torch._scaled_mm, on Llama-3-8B projections.

For each projection (qkv 6144x4096, o 4096x4096, gate_up 28672x4096, down 4096x14336; N x K) and
M tokens (1, 16, 64, 256, 4096) it times, in the same run:
  ours       fp8_linear on activations already in fp8 (the GEMM alone; the config from the table; the Triton
             kernels at every M, though the engine hands M >= 257 to cuBLAS: the `fast` column)
  gemv       at M = 1: kernels.fp8_gemv on the bf16 row, what the engine runs for one token (no quantization)
  ours+q     fp8_linear_from_activations: per-token quantization kernel, then the GEMM (what a layer costs)
  fused      the same with fused=True (quantization inside the GEMM), for M <= 64
  precise    fp8_linear(precise_accumulation=True): fp32 adds every BLOCK_K (ours defaults to fast accumulation)
  scaled_mm  torch._scaled_mm with rowwise scales (scale_a [M, 1], scale_b [1, N] fp32), bf16 out;
             per-tensor scales if rowwise is refused (then said so, and its errors are not compared)
  fast       torch._scaled_mm with use_fast_accum=True: the accumulation our kernel uses on sm_90
  tensor     the same with per-tensor scales (1.0 each): cuBLAS's kernels for static activation scales, as
             TensorRT-LLM's FP8 checkpoints run, against the rowwise ones the engine needs (`vs tensor` = ours / it)
  bf16       torch.matmul in bf16, for context
TFLOP/s = 2 M N K / time; `vs sm` = ours / scaled_mm and `vs fast` = ours / fast (> 1: ours faster); at M = 1
`gemv vs sm` = gemv / scaled_mm.
`bw%`: bytes ours must move (weight + activations + output, once) over its time, as a share of the
device-to-device copy bandwidth measured at the start (the decode shapes should approach it).
`err`: ||ours - scaled_mm|| / ||scaled_mm|| on the same fp8 inputs (bf16 outputs).

Timing (benchmarks/gpu_timing.py): every call reads the next of several weight copies (more than L2 holds
together), so it reads its weights from HBM as a forward pass does; each contender is a CUDA graph of 20
calls, and the contenders of a case are replayed in turns, 5 rounds; a contender's time is its best round's
median, `spread` the slowest round of ours over its fastest (another tenant's work shows there). `--sweep`
also times a few alternative tile configs per case and prints the best next to the table's choice (tuning
data for kernels/fp8_gemm_configs.py).

    python benchmarks/fp8_gemm.py                      # all shapes, M = 1 16 64 256 4096
    python benchmarks/fp8_gemm.py --m 1 16 --layers o down --sweep --json $OUT/fp8_gemm.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LLAMA3_8B = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
M_VALUES = (1, 16, 64, 256, 4096)
DEVICE = "cuda"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--m", type=int, nargs="+", default=list(M_VALUES), help="token counts")
    parser.add_argument("--layers", nargs="+", default=list(LLAMA3_8B), choices=list(LLAMA3_8B))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per case")
    parser.add_argument("--sweep", action="store_true", help="also time alternative tile configs")
    parser.add_argument("--json", type=Path, help="write every number here")
    return parser.parse_args()


def scaled_mm_fn(x_fp8, x_scales, rowwise: bool, fast: bool):
    """call(w_fp8, w_scales): torch._scaled_mm of the fp8 activations by that weight, bf16 out."""
    ones = torch.ones((), device=DEVICE)

    def call(w_fp8, w_scales):
        scale_a, scale_b = (x_scales[:, None], w_scales[None, :]) if rowwise else (ones, ones)
        return torch._scaled_mm(
            x_fp8, w_fp8.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16, use_fast_accum=fast
        )

    return call


def sweep_candidates(M: int):
    from modelgate.kernels.fp8_gemm_configs import DECODE_MAX_M, Fp8GemmConfig, select_config

    if M <= DECODE_MAX_M:
        block_m = select_config(M, 4096, 4096).block_m
        shapes = [
            (32, 256, 5, 4),
            (64, 128, 6, 4),
            (64, 256, 4, 4),
            (64, 256, 5, 4),
            (128, 128, 5, 4),
            (128, 256, 3, 8),
        ]
        return [
            Fp8GemmConfig(block_m, bn, bk, 1, split, warps, stages)
            for bn, bk, stages, warps in shapes
            for split in (1, 2, 4)
        ]
    shapes = [
        (64, 128, 128, 4, 4),
        (128, 128, 128, 4, 8),
        (128, 256, 128, 3, 8),
        (128, 128, 64, 5, 4),
        (256, 128, 128, 3, 8),
        (128, 256, 64, 4, 8),
        (64, 64, 256, 4, 4),
        (64, 128, 256, 3, 4),
        (128, 64, 128, 4, 4),
        (128, 128, 128, 4, 4),
        (64, 256, 128, 3, 8),
    ]
    return [Fp8GemmConfig(bm, bn, bk, 8, 1, warps, stages) for bm, bn, bk, stages, warps in shapes]


def config_name(config) -> str:
    return (
        f"{config.block_m}x{config.block_n}x{config.block_k} s{config.num_stages} w{config.num_warps} k{config.split_k}"
    )


def run_case(layer: str, M: int, args, rowwise: bool, copy_gbs: float) -> dict:
    from benchmarks.gpu_timing import COLD_BYTES, interleaved_rounds_ms, rotating
    from modelgate.kernels.fp8_gemm import fp8_linear, fp8_linear_from_activations, num_sms_of, select_config
    from modelgate.kernels.fp8_gemm_configs import DECODE_MAX_M
    from modelgate.kernels.fp8_gemv import fp8_gemv
    from modelgate.kernels.fp8_quant import quantize_per_token, quantize_weight_per_channel

    N, K = LLAMA3_8B[layer]
    torch.manual_seed(M * 7 + N + K)
    x = torch.randn(M, K, device=DEVICE, dtype=torch.bfloat16)
    w = (torch.randn(N, K, device=DEVICE) * 0.02).to(torch.bfloat16)
    w_fp8, w_scales = quantize_weight_per_channel(w)
    x_fp8, x_scales = quantize_per_token(x)
    flops = 2 * M * N * K
    config = select_config(M, N, K, num_sms_of(x.device))
    row = dict(layer=layer, M=M, N=N, K=K, config=config_name(config), errors={})

    def tflops(ms):
        return None if ms is None else flops / ms / 1e9

    copies = max(1, math.ceil(COLD_BYTES / (N * K)))
    weights = [(w_fp8, w_scales)] + [(w_fp8.clone(), w_scales.clone()) for _ in range(copies - 1)]
    bf16_copies = max(1, math.ceil(COLD_BYTES / (2 * N * K)))
    bf16_weights = [w] + [w.clone() for _ in range(bf16_copies - 1)]

    def cold(call):
        """call(w_fp8, w_scales) on the next weight copy each time."""
        return rotating(lambda i: lambda: call(*weights[i]), copies)

    ours = cold(lambda wq, ws: fp8_linear(x_fp8, x_scales, wq, ws))
    out = fp8_linear(x_fp8, x_scales, w_fp8, w_scales)
    peer = scaled_mm_fn(x_fp8, x_scales, rowwise, fast=False)
    ref = peer(w_fp8, w_scales) if rowwise else None  # per-tensor scales: not the same product
    row["err"] = None if ref is None else ((out.float() - ref.float()).norm() / ref.float().norm()).item()

    calls = {
        "ours": ours,
        "ours+q": cold(lambda wq, ws: fp8_linear_from_activations(x, wq, ws)),
        "precise": cold(lambda wq, ws: fp8_linear(x_fp8, x_scales, wq, ws, precise_accumulation=True)),
        "scaled_mm": cold(peer),
        "fast": cold(scaled_mm_fn(x_fp8, x_scales, rowwise, fast=True)),
        # Per-tensor scales (static activation scales, as TensorRT-LLM's FP8 checkpoints use): cuBLAS's other kernels.
        "tensor": cold(scaled_mm_fn(x_fp8, x_scales, rowwise=False, fast=True)),
        "bf16": rotating(lambda i: lambda: torch.matmul(x, bf16_weights[i].t()), bf16_copies),
    }
    if M <= DECODE_MAX_M:
        calls["fused"] = cold(lambda wq, ws: fp8_linear_from_activations(x, wq, ws, fused=True))
    if M == 1:
        calls["gemv"] = cold(lambda wq, ws: fp8_gemv(x, wq, ws))
    times = interleaved_rounds_ms(calls, rounds=args.rounds)
    for name in calls:
        row[name + "_ms"], row[name] = times.best(name), tflops(times.best(name))
    row["errors"].update(times.errors)
    row["spread"] = times.spread("ours")
    bytes_moved = N * K + M * K + 2 * M * N + 4 * (M + N)
    row["bw_pct"] = None if row["ours_ms"] is None else 100 * bytes_moved / row["ours_ms"] / 1e6 / copy_gbs

    if args.sweep:
        candidates = {
            config_name(c): cold(lambda wq, ws, c=c: fp8_linear(x_fp8, x_scales, wq, ws, config=c))
            for c in sweep_candidates(M)
        }
        swept = interleaved_rounds_ms(candidates, rounds=1)
        best = (row["ours_ms"], row["config"])
        for name in candidates:
            ms = swept.best(name)
            if ms is not None and (best[0] is None or ms < best[0]):
                best = (ms, name)
        row["best_config"], row["best"] = best[1], tflops(best[0])
    return row


def fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a, b) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}"


def print_table(rows: list[dict], args) -> None:
    header = (
        f"{'layer':8} {'M':>5} {'N':>6} {'K':>6} {'config':24} {'ours':>7} {'ours+q':>7} {'fused':>7} "
        f"{'precise':>7} {'sc_mm':>7} {'vs sm':>6} {'fast':>7} {'vs fast':>7} {'bf16':>7} {'bw%':>5} "
        f"{'spread':>6} {'err':>8} {'gemv':>7} {'gemv vs sm':>10} {'tensor':>7} {'vs tensor':>9}"
    )
    if args.sweep:
        header += f"  {'best config':24} {'best':>7}"
    print("TFLOP/s (best round's median); vs = ours / peer")
    print(header)
    for r in rows:
        spread = "-" if r["spread"] is None else f"{100 * r['spread']:.1f}%"
        err = "-" if r["err"] is None else f"{r['err']:.1e}"
        line = (
            f"{r['layer']:8} {r['M']:>5} {r['N']:>6} {r['K']:>6} {r['config']:24} {fmt(r['ours']):>7} "
            f"{fmt(r['ours+q']):>7} {fmt(r.get('fused')):>7} {fmt(r['precise']):>7} {fmt(r['scaled_mm']):>7} "
            f"{ratio(r['ours'], r['scaled_mm']):>6} {fmt(r['fast']):>7} {ratio(r['ours'], r['fast']):>7} "
            f"{fmt(r['bf16']):>7} {fmt(r['bw_pct'], 0):>5} {spread:>6} {err:>8} {fmt(r.get('gemv')):>7} "
            f"{ratio(r.get('gemv'), r['scaled_mm']):>10} {fmt(r['tensor']):>7} {ratio(r['ours'], r['tensor']):>9}"
        )
        if args.sweep:
            line += f"  {r['best_config']:24} {fmt(r['best']):>7}"
        print(line)
    for r in rows:
        for name, error in r["errors"].items():
            print(f"  {r['layer']} M={r['M']} {name}: {error}")


def main() -> int:
    args = parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/fp8_gemm.py needs a CUDA GPU (FP8 tensor cores, sm_89+); nothing to measure here.")
        return 0
    import triton

    props = torch.cuda.get_device_properties(0)
    print(
        f"device: {props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}, "
        f"triton {triton.__version__}"
    )
    from benchmarks.gpu_timing import our_gemm_kernels_only
    from modelgate.kernels.fp8_gemm_cublas import rowwise_scaled_mm_refusal

    our_gemm_kernels_only()

    refused = rowwise_scaled_mm_refusal(torch.device(DEVICE))
    if refused:
        print(
            f"torch._scaled_mm refused rowwise scales ({refused}): the peer uses per-tensor scales "
            f"(timing only; err not compared)"
        )
    from benchmarks.decode_attention import memory_bandwidths

    copy_gbs, _ = memory_bandwidths()
    print(f"device-to-device copy: {copy_gbs:.0f} GB/s (read + write)")
    rows = []
    for layer in args.layers:
        for M in args.m:
            rows.append(run_case(layer, M, args, rowwise=refused is None, copy_gbs=copy_gbs))
            torch.cuda.empty_cache()  # the case's weight copies and graphs are gone now
            print(f"  done {layer} M={M}: ours {fmt(rows[-1]['ours'])} TFLOP/s", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(dict(device=props.name, copy_gbs=copy_gbs, rowwise=refused is None, rows=rows), indent=1)
        )
    print()
    print_table(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
