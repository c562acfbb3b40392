"""Launch configurations of the FP8 GEMM (kernels.fp8_gemm) and the rule that picks one per problem.

A given (M, N, K, SM count) always gets the same config, and the interpreter (CPU) picks what an H100 would, so
tests run the code the GPU runs. Why these tiles (H100: 132 SMs, 227 KB shared memory per block, 50 MB L2):
- decode (M <= 64) is bound by reading the weight: BLOCK_M is the smallest of 16/32/64 that covers M (16 is
  tl.dot's minimum: the least MMA work on padding rows), BLOCK_N = 64 keeps enough programs (N/64) to spread
  the weight over the SMs, and BLOCK_K = 256 with 4-5 stages keeps ~64-100 KB of weight loads in flight per
  SM. When the tiles are fewer than the SMs (o and down projections: N/64 = 64 tiles), K is split over 2-8
  programs (split-K) whose fp32 partials a small kernel sums in a fixed order (deterministic, no atomics).
  M 33..64 over a wide N (gate_up) uses DECODE_WIDE_CONFIG instead: two programs per SM.
- M > 64 leans on the tensor cores. Three tiles compete (MID_TILES); `select_config` takes the one whose
  estimated time is least: waves of programs (ceil(tiles / SMs)) times one tile's cost, its area over its
  relative throughput. The throughputs are fitted to the H100 sweep (benchmarks/fp8_gemm.py --sweep, M = 256
  and 1024): 128x256 tiles with 8 warps (two warpgroups of wgmma) are the fastest per element; 128x128 with
  4 warps reach 0.8 of that, 64x128 0.56. So the widest tile wins when it fills the SMs (gate_up, and every
  layer at M = 4096), a narrower one when the wide tiles would leave a wave mostly empty (qkv at M = 256 and
  1024: 48 and 192 wide tiles on 132 SMs) or too few SMs busy (o and down at M = 256: 64x128).
Tiles shrink to the problem for tiny layers (BLOCK_N, BLOCK_K down to max(32, next power of two)).
"""

from __future__ import annotations

import dataclasses
import functools

# The H100 SXM's SM count: the config choice under the interpreter (CPU) matches an H100's.
DEFAULT_NUM_SMS = 132
MAX_SPLIT_K = 8
# Split K only for long reductions: on the H100 (benchmarks/fp8_gemm.py --sweep, M = 1..64) unsplit tiles beat
# split ones for K = 4096 (qkv, o), while the down projection (K = 14336) gains from splitting.
SPLIT_K_MIN_K = 8192
MIN_K_BLOCKS_PER_SPLIT = 4  # fewer K steps than this per program and the pipeline never fills
DECODE_MAX_M = 64


@dataclasses.dataclass(frozen=True)
class Fp8GemmConfig:
    """One launch configuration of the FP8 GEMM kernel."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 1  # M tiles per swizzle group (programs in a group share B tiles through L2)
    split_k: int = 1  # programs along K; > 1 adds an fp32 partial buffer and a reduction kernel
    num_warps: int = 4
    num_stages: int = 3

    def validate(self) -> None:
        # fp8 tl.dot on NVIDIA needs K >= 32 per dot (the interpreter would accept less).
        for name, least in (("block_m", 16), ("block_n", 16), ("block_k", 32)):
            value = getattr(self, name)
            if value < least or value & (value - 1):
                raise ValueError(f"Fp8GemmConfig.{name} must be a power of two >= {least}, got {value}")
        if self.group_m < 1 or self.split_k < 1 or self.num_stages < 1:
            raise ValueError(f"Fp8GemmConfig: group_m, split_k and num_stages must be >= 1, got {self}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"Fp8GemmConfig.num_warps must be 1, 2, 4, 8 or 16, got {self.num_warps}")


# (largest M of the bucket, config) for decode sizes. See the module docstring.
DECODE_TABLE: tuple[tuple[int, Fp8GemmConfig], ...] = (
    (16, Fp8GemmConfig(block_m=16, block_n=64, block_k=256, group_m=1, num_warps=4, num_stages=5)),
    (32, Fp8GemmConfig(block_m=32, block_n=64, block_k=256, group_m=1, num_warps=4, num_stages=5)),
    (DECODE_MAX_M, Fp8GemmConfig(block_m=64, block_n=64, block_k=256, group_m=1, num_warps=4, num_stages=4)),
)
# M 33..64, N >= 2 waves of 64-wide tiles: 96 KB of shared memory, two programs per SM (H100: 262 vs 249 TFLOP/s).
DECODE_WIDE_CONFIG = Fp8GemmConfig(block_m=64, block_n=64, block_k=128, group_m=1, num_warps=4, num_stages=6)
PREFILL_CONFIG = Fp8GemmConfig(block_m=128, block_n=256, block_k=128, group_m=8, num_warps=8, num_stages=3)
SQUARE_CONFIG = Fp8GemmConfig(block_m=128, block_n=128, block_k=128, group_m=8, num_warps=4, num_stages=4)
MID_CONFIG = Fp8GemmConfig(block_m=64, block_n=128, block_k=256, group_m=8, num_warps=4, num_stages=3)
# (config, output elements per unit time relative to PREFILL_CONFIG's), fitted to the H100 sweep; earlier
# entries win ties.
MID_TILES: tuple[tuple[Fp8GemmConfig, float], ...] = ((PREFILL_CONFIG, 1.0), (SQUARE_CONFIG, 0.8), (MID_CONFIG, 0.56))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def estimated_time(config: Fp8GemmConfig, throughput: float, M: int, N: int, num_sms: int) -> float:
    """Relative run time of an M x N output in `config`'s tiles: waves of programs times one tile's cost."""
    tiles = _cdiv(M, config.block_m) * _cdiv(N, config.block_n)
    return _cdiv(tiles, num_sms) * config.block_m * config.block_n / throughput


@functools.lru_cache(maxsize=4096)
def select_config(M: int, N: int, K: int, num_sms: int = DEFAULT_NUM_SMS) -> Fp8GemmConfig:
    """The config for this problem: decode bucket (and split-K) up to M = 64, the fastest estimated tile above."""
    if M > DECODE_MAX_M:
        config = min(MID_TILES, key=lambda entry: estimated_time(entry[0], entry[1], M, N, num_sms))[0]
    else:
        config = next(c for max_m, c in DECODE_TABLE if M <= max_m)
        if config.block_m == DECODE_WIDE_CONFIG.block_m and _cdiv(N, DECODE_WIDE_CONFIG.block_n) >= 2 * num_sms:
            config = DECODE_WIDE_CONFIG
    block_n = min(config.block_n, max(32, 1 << (N - 1).bit_length()))
    block_k = min(config.block_k, max(32, 1 << (K - 1).bit_length()))
    split_k = 1
    if M <= DECODE_MAX_M and K >= SPLIT_K_MIN_K:
        tiles = _cdiv(M, config.block_m) * _cdiv(N, block_n)
        if tiles < num_sms:
            k_blocks = _cdiv(K, block_k)
            split_k = max(1, min(MAX_SPLIT_K, _cdiv(num_sms, tiles), k_blocks // MIN_K_BLOCKS_PER_SPLIT))
    return dataclasses.replace(config, block_n=block_n, block_k=block_k, split_k=split_k)


def select_tma_config(M: int, N: int, K: int, num_sms: int = DEFAULT_NUM_SMS) -> Fp8GemmConfig:
    """The TMA kernel's config (kernels/fp8_gemm_tma.py), which fp8_gemm takes at decode sizes on Hopper.

    The decode bucket's BLOCK_M and BLOCK_K = 256, unsplit; N in the narrowest tiles that still fit one wave,
    with the deepest pipeline their shared memory allows (TMA stages cost no registers): 32-wide in 6 stages
    when N / 32 tiles fit the SMs (o, down: 9.3 and 24.1 us at M = 64 on the H100, against 10.2 and 29.8 for
    fp8_gemm's own tiles), else 64-wide in 4 stages (qkv: 12.0 against 12.4), else 64-wide in 3 stages, two
    programs per SM (gate_up: 44.4 against 45.8; benchmarks/fp8_gemm_tma.py --sweep). Above the decode sizes,
    select_config's."""
    if M > DECODE_MAX_M:
        return select_config(M, N, K, num_sms)
    block_m = next(c for max_m, c in DECODE_TABLE if M <= max_m).block_m
    if _cdiv(N, 32) <= num_sms:
        block_n, stages = 32, 6
    elif _cdiv(N, 64) <= num_sms:
        block_n, stages = 64, 4
    else:
        block_n, stages = 64, 3
    block_k = min(256, max(32, 1 << (K - 1).bit_length()))
    return Fp8GemmConfig(block_m, block_n, block_k, group_m=1, split_k=1, num_warps=4, num_stages=stages)
