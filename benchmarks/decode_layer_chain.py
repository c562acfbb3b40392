"""A batch-1 FP8 decode step's kernel chain without the engine: GEMV tunings against the weights' read floor.

Builds 32 Llama-3-8B-shaped decoder layers of FP8 weights (7 GB, so nothing stays in L2 from one step to the
next) and an FP8 KV cache at --context tokens, and replays, from one CUDA graph, the kernels a batch-1 decode
step runs per layer: RMSNorm (+ residual) -> qkv GEMV -> paged decode attention -> o GEMV -> RMSNorm ->
gate_up GEMV with SiLU-and-mul -> down GEMV. (Rotary and the KV write, the embedding and lm_head are left
out: they do not change with the GEMV's settings.)

For each setting (programmatic dependent launch of the GEMVs on/off, o_proj's weights L2-prefetched during the
attention, the norms computed inside the GEMVs after them instead of their own kernels, weight rows per GEMV
program and programs per SM) it prints the chain's time per step, per layer, and its ratio to the floor: the
layers' weight bytes and KV bytes / the read-only bandwidth measured in the same run.

    python benchmarks/decode_layer_chain.py [--context 1024]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.decode_attention import memory_bandwidths, time_ms  # noqa: E402

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM, LAYERS = 4096, 14336, 32, 8, 128, 32
BLOCK_SIZE = 16


def fp8_weight(rows: int, cols: int):
    from modelgate.kernels.fp8_quant import quantize_weight_per_channel

    return quantize_weight_per_channel(torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16) * 0.02)


class Layer:
    def __init__(self):
        self.qkv = fp8_weight((HEADS + 2 * KV_HEADS) * HEAD_DIM, HIDDEN)
        self.o = fp8_weight(HIDDEN, HEADS * HEAD_DIM)
        self.gate_up = fp8_weight(2 * INTERMEDIATE, HIDDEN)
        self.down = fp8_weight(HIDDEN, INTERMEDIATE)
        self.norms = [torch.ones(HIDDEN, device="cuda", dtype=torch.bfloat16) for _ in range(2)]

    def weight_bytes(self) -> int:
        return sum(w.numel() + 4 * s.numel() for w, s in (self.qkv, self.o, self.gate_up, self.down))


def make_cache(context: int):
    from modelgate.kernels.reshape_and_cache import allocate_kv_cache, reshape_and_cache

    blocks = context // BLOCK_SIZE
    caches = []
    for _ in range(LAYERS):
        kv_cache, kv_scales = allocate_kv_cache(blocks, BLOCK_SIZE, KV_HEADS, HEAD_DIM, torch.float8_e4m3fn, "cuda")
        shape = (blocks * BLOCK_SIZE, KV_HEADS, HEAD_DIM)
        slots = torch.arange(blocks * BLOCK_SIZE, device="cuda")
        reshape_and_cache(
            torch.randn(shape, device="cuda", dtype=torch.bfloat16),
            torch.randn(shape, device="cuda", dtype=torch.bfloat16),
            kv_cache,
            slots,
            kv_scales,
        )
        caches.append((kv_cache, kv_scales))
    table = torch.arange(blocks, device="cuda", dtype=torch.int32)[None, :]
    lens = torch.full((1,), context, device="cuda", dtype=torch.int32)
    return caches, table, lens


def chain(
    layers,
    caches,
    table,
    lens,
    context: int,
    pdl: bool,
    prefetch_o: bool,
    norms_in_gemv: bool,
    rows: int = 0,
    per_sm: int = 0,
):
    from modelgate.kernels.fp8_gemv import DEFAULT_CONFIG, SILU_DEFAULT_CONFIG, InputNorm, fp8_gemv
    from modelgate.kernels.paged_decode_attention import paged_decode_attention
    from modelgate.kernels.rms_norm import rms_norm

    config = DEFAULT_CONFIG._replace(pdl=pdl)
    configs = {name: config for name in ("qkv", "o", "down")}
    configs["gate_up"] = SILU_DEFAULT_CONFIG._replace(pdl=pdl)
    if rows:  # every program reads `rows` weight rows (gate_up with SiLU: rows / 2 gate and as many up rows)
        tuned = config._replace(block_n=rows, programs_per_sm=per_sm)
        configs.update(qkv=tuned, o=tuned, down=tuned, gate_up=tuned._replace(block_n=rows // 2))
    hidden = torch.randn(1, HIDDEN, device="cuda", dtype=torch.bfloat16)
    residual = torch.randn(1, HIDDEN, device="cuda", dtype=torch.bfloat16)

    def normed_gemv(h, r, norm_weight, weight, config, silu=False):
        if norms_in_gemv:
            new_residual = torch.empty_like(r)
            norm = InputNorm(norm_weight, 1e-5, r, new_residual)
            return fp8_gemv(h, *weight, config=config, silu_and_mul=silu, norm=norm), new_residual
        normed, r = rms_norm(h, norm_weight, 1e-5, r)
        return fp8_gemv(normed, *weight, config=config, silu_and_mul=silu), r

    def step():
        h, r = hidden, residual.clone()
        for layer, (kv_cache, kv_scales) in zip(layers, caches):
            qkv, r = normed_gemv(h, r, layer.norms[0], layer.qkv, configs["qkv"])
            q = qkv[:, : HEADS * HEAD_DIM].view(1, HEADS, HEAD_DIM)
            attn = paged_decode_attention(q, kv_cache, table, lens, kv_scales=kv_scales, max_context_len=context)
            h = fp8_gemv(attn.view(1, -1), *layer.o, config=configs["o"], prefetch_weights=prefetch_o)
            activated, r = normed_gemv(h, r, layer.norms[1], layer.gate_up, configs["gate_up"], silu=True)
            h = fp8_gemv(activated, *layer.down, config=configs["down"])
        return h

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=1024)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing measured")
        return 0
    copy_bw, read_bw = memory_bandwidths()
    torch.manual_seed(0)
    layers = [Layer() for _ in range(LAYERS)]
    caches, table, lens = make_cache(args.context)
    kv_bytes = sum(c.numel() * c.element_size() + s.numel() * 4 for c, s in caches)
    floor_us = (sum(layer.weight_bytes() for layer in layers) + kv_bytes) / read_bw / 1e3
    print(
        f"{torch.cuda.get_device_name()}: read-only {read_bw:.0f} GB/s; {LAYERS} layers, context {args.context}: "
        f"floor {floor_us:.0f} us"
    )
    print(
        f"{'pdl':>6}{'o_proj prefetch':>17}{'norms in GEMV':>15}{'rows x programs':>16}{'step us':>9}"
        f"{'us/layer':>10}{'/floor':>8}"
    )
    for pdl, prefetch_o, norms_in_gemv, rows, per_sm in (
        (False, False, False, 0, 0),
        (True, False, False, 0, 0),
        (True, True, False, 0, 0),
        (True, False, True, 0, 0),
        (True, True, True, 0, 0),
        (True, True, True, 16, 4),
        (True, True, True, 32, 2),
        (True, True, True, 32, 4),
        (True, True, True, 64, 3),
    ):
        step = chain(layers, caches, table, lens, args.context, pdl, prefetch_o, norms_in_gemv, rows, per_sm)
        step_us = time_ms(step) * 1e3
        tiles = f"{rows} x {per_sm}/SM" if rows else "default 32 x 3"
        print(
            f"{pdl!s:>6}{prefetch_o!s:>17}{norms_in_gemv!s:>15}{tiles:>16}{step_us:>9.0f}"
            f"{step_us / LAYERS:>10.2f}{step_us / floor_us:>8.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
