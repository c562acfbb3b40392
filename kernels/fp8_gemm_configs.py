"""Launch configurations of the FP8 GEMM (kernels.fp8_gemm) and the rule that picks one per problem.

A given (M, N, K, SM count) always gets the same config, and the interpreter (CPU) picks what an H100 would, so
tests run the code the GPU runs. Why these tiles (H100: 132 SMs, 227 KB shared memory per block, 50 MB L2):
- decode (M <= 64) is bound by reading the weight: BLOCK_M is the smallest of 16/32/64 that covers M (16 is
  tl.dot's minimum: the least MMA work on padding rows), BLOCK_N = 64 keeps enough programs (N/64) to spread
  the weight over the SMs, and BLOCK_K = 256 with 4-5 stages keeps ~64-100 KB of weight loads in flight per
  SM. When the tiles are fewer than the SMs (o and down projections: N/64 = 64 tiles), K is split over 2-8
  programs (split-K) whose fp32 partials a small kernel sums in a fixed order (deterministic, no atomics).
  M 33..64 over a wide N (gate_up) uses DECODE_WIDE_CONFIG instead, two programs per SM.
- mid (64 < M <= 256) picks by how many tiles fill the 132 SMs (H100 sweep at M = 72..256 of the four Llama-3-8B
  layers, session 29; a bucket's tile counts are the same for every M in it, so every M was covered):
  the prefill tile once its 128x256 tiles reach 3/4 of the SMs (gate_up from M = 65: 112 tiles, 1.6-1.8x the
  64x64 tiles it had, 620 against 341 TFLOP/s at M = 128); else 64x64x256 in 4 stages while those tiles
  fit one wave (o and down up to M = 128: 1.25x); else 128x128x128 in 4 warps and 4 stages when 64x128 tiles
  would need a second wave and 128x128 ones do not (qkv from M = 129: 1.4x); else 64x128x256, 3 stages.
- prefill (M > 256) is bound by the tensor cores: 128x256x128 tiles, 8 warps (two warpgroups of wgmma),
  3 stages (3 x 48 KB shared), GROUP_M = 8 so that programs running together share weight columns in L2;
  when 128x256 tiles would leave SMs idle (fewer tiles than SMs), 128x128x128 with 4 stages.
  Not adopted (session 25): the sweep at M = 256 and 1024 found 128x128x128 in 4 warps faster for qkv (771 vs
  543 TFLOP/s at 256, 1112 vs 1039 at 1024) and the wide tile for o and down at 1024 (1243 vs 1103, 1358 vs
  1318). A rule that picked those (least waves x tile cost) also moved sizes nobody measured, such as the few
  hundred tokens of the mixed steps that serving runs; served 128/128 at concurrency 256 measured 7-9%
  slower with that session's changes together, and this rule, the one that moved unmeasured sizes, was
  taken back first. Those sizes need measuring before this table changes.
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
MID_MAX_M = 256


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
PREFILL_NARROW_CONFIG = Fp8GemmConfig(block_m=128, block_n=128, block_k=128, group_m=8, num_warps=8, num_stages=4)
MID_CONFIG = Fp8GemmConfig(block_m=64, block_n=128, block_k=256, group_m=8, num_warps=4, num_stages=3)
MID_NARROW_CONFIG = Fp8GemmConfig(block_m=64, block_n=64, block_k=256, group_m=8, num_warps=4, num_stages=4)
MID_TALL_CONFIG = Fp8GemmConfig(block_m=128, block_n=128, block_k=128, group_m=8, num_warps=4, num_stages=4)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _tiles(M: int, N: int, config: Fp8GemmConfig) -> int:
    return _cdiv(M, config.block_m) * _cdiv(N, config.block_n)


def _mid_config(M: int, N: int, num_sms: int) -> Fp8GemmConfig:
    """64 < M <= 256: the first tile, in the module docstring's order, whose tile count suits the SMs."""
    if 4 * _tiles(M, N, PREFILL_CONFIG) >= 3 * num_sms:
        return PREFILL_CONFIG
    if _tiles(M, N, MID_NARROW_CONFIG) <= num_sms:
        return MID_NARROW_CONFIG
    if _tiles(M, N, MID_CONFIG) > num_sms and _tiles(M, N, MID_TALL_CONFIG) <= num_sms:
        return MID_TALL_CONFIG
    return MID_CONFIG


@functools.lru_cache(maxsize=4096)
def select_config(M: int, N: int, K: int, num_sms: int = DEFAULT_NUM_SMS) -> Fp8GemmConfig:
    """The table's config for this problem: M bucket, prefill tile width, tiny-layer shrink, decode split-K."""
    if M > MID_MAX_M:
        config = PREFILL_CONFIG if _tiles(M, N, PREFILL_CONFIG) >= num_sms else PREFILL_NARROW_CONFIG
    elif M > DECODE_MAX_M:
        config = _mid_config(M, N, num_sms)
    else:
        config = next(c for max_m, c in DECODE_TABLE if M <= max_m)
        # 64-row tiles over a wide N: two programs per SM.
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
