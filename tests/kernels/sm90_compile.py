"""Compile kernels for an H100 (sm_90) without a GPU: `python -m tests.kernels.sm90_compile`, in a process where
TRITON_INTERPRET is unset (the interpreter's kernels cannot be compiled). Prints one line per kernel, "ok" and its
shared memory, and exits non-zero on the first one that fails: what a GPU's first launch would do at load.

The kernels and launch configs are the production ones for Llama 3 8B's gate | up projection (I = 14336,
K = 4096), so a kernel that only the interpreter ran so far (kernels/fp8_gemm_silu*.py) is known to compile.
"""

from __future__ import annotations

import sys

SM90 = ("cuda", 90, 32)
INTER, HIDDEN = 14336, 4096
SMS = 132


def _compile(kernel, signature: dict, constexprs: dict, config, ptx_needs: tuple[str, ...] = ()) -> int:
    """Shared memory bytes of `kernel` compiled for sm_90 (16-byte aligned pointers, as launches specialize);
    `ptx_needs`: instructions its PTX must hold (and, with "launch_pdl", the launch it is compiled for)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {name: "constexpr" if name in constexprs else signature[name] for name in kernel.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(kernel.arg_names) if signature[name][0] == "*"}
    source = ASTSource(kernel, signature, constexprs=constexprs, attrs=attrs)
    options = dict(num_warps=config.num_warps, num_stages=config.num_stages, launch_pdl=bool(ptx_needs))
    compiled = triton.compile(source, target=GPUTarget(*SM90), options=options)
    assert compiled.asm["cubin"], "no cubin"
    missing = [instruction for instruction in ptx_needs if instruction not in compiled.asm["ptx"]]
    assert not missing, f"PTX lacks {missing}"
    return compiled.metadata.shared


def tile_descriptors(config) -> dict[str, str]:
    """The signature of a TMA GEMM's A and B descriptors, blocks of the config's tiles."""
    return dict(
        a_desc=f"tensordesc<fp8e4nv[{config.block_m}, {config.block_k}]>",
        b_desc=f"tensordesc<fp8e4nv[{config.block_n}, {config.block_k}]>",
    )


def fused_silu_gemms():
    """(label, kernel, signature, constexprs, config) of the gate | up GEMMs with the SiLU epilogue."""
    from modelgate.kernels.fp8_gemm_silu import _fp8_gemm_silu_kernel, silu_fusion_config
    from modelgate.kernels.fp8_gemm_silu_tma import _fp8_gemm_silu_tma_kernel

    scalars = dict.fromkeys(("M", "INTER", "K", "stride_am", "stride_bn", "num_pieces"), "i32")
    pointers = dict(a_scale_ptr="*fp32", b_scale_ptr="*fp32", y_ptr="*bf16", amax_ptr="*fp32")
    for tokens in (65, 256, 1024):
        config = silu_fusion_config(tokens, INTER, HIDDEN, SMS)
        signature = dict(a_ptr="*fp8e4nv", b_ptr="*fp8e4nv", **pointers, **scalars)
        constexprs = dict(ROUND_IN_FP32=False, EVEN_K=True, BLOCK_M=config.block_m, BLOCK_N=config.block_n)
        constexprs.update(BLOCK_K=config.block_k, GROUP_M=config.group_m)
        yield f"fp8_gemm_silu M={tokens}", _fp8_gemm_silu_kernel, signature, constexprs, config
    for tokens in (16, 64):
        config = silu_fusion_config(tokens, INTER, HIDDEN, SMS, tma=True)
        signature = dict(
            **tile_descriptors(config),
            **pointers,
            **scalars,
        )
        constexprs = dict(ROUND_IN_FP32=False, BLOCK_M=config.block_m, BLOCK_N=config.block_n)
        constexprs.update(BLOCK_K=config.block_k, GROUP_M=config.group_m)
        yield f"fp8_gemm_silu_tma M={tokens}", _fp8_gemm_silu_tma_kernel, signature, constexprs, config


PDL_PTX = ("griddepcontrol.wait", "griddepcontrol.launch_dependents", "cp.async.bulk.prefetch.L2")


def pdl_tma_gemms():
    """(label, kernel, signature, constexprs, config, PTX it must hold) of the decode-size TMA GEMM launched with
    PDL and its weights' L2 prefetch (kernels/fp8_gemm_tma.py), at Llama 3 8B's qkv and down projections."""
    from modelgate.kernels.fp8_gemm_configs import select_tma_config
    from modelgate.kernels.fp8_gemm_tma import _fp8_gemm_tma_kernel

    for name, n, k in (("qkv", 6144, HIDDEN), ("down", HIDDEN, INTER)):
        config = select_tma_config(64, n, k, SMS)
        signature = dict(
            **tile_descriptors(config),
            b_ptr="*fp8e4nv",
            a_scale_ptr="*fp32",
            b_scale_ptr="*fp32",
            c_ptr="*bf16",
            **dict.fromkeys(("M", "N", "K", "stride_cm", "K_PER_SPLIT"), "i32"),
        )
        constexprs = dict(SPLIT_K=1, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k)
        constexprs.update(GROUP_M=config.group_m, ROUND_IN_FP32=False, PREFETCH_BYTES=1024)
        constexprs.update(PREFETCH_CHUNKS=config.num_warps * 32 // config.block_n)
        yield f"fp8_gemm_tma PDL {name} M=64", _fp8_gemm_tma_kernel, signature, constexprs, config, PDL_PTX


def persistent_tma_gemms():
    """(label, kernel, signature, constexprs, config) of the persistent TMA GEMM (kernels/fp8_gemm_tma_persistent.py)
    at prefill sizes of Llama 3 8B's qkv and down projections, its tile loop flattened or not."""
    from modelgate.kernels.fp8_gemm_configs import select_config
    from modelgate.kernels.fp8_gemm_tma_persistent import _fp8_gemm_tma_persistent_kernel

    for name, n, k, flatten in (("qkv", 6144, HIDDEN, True), ("down", HIDDEN, INTER, False)):
        config = select_config(1024, n, k, SMS)
        signature = dict(
            **tile_descriptors(config),
            a_scale_ptr="*fp32",
            b_scale_ptr="*fp32",
            c_ptr="*bf16",
            **dict.fromkeys(("M", "N", "K", "stride_cm"), "i32"),
        )
        constexprs = dict(NUM_PROGRAMS=SMS, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k)
        constexprs.update(GROUP_M=config.group_m, ROUND_IN_FP32=False, FLATTEN=flatten)
        yield (
            f"fp8_gemm_tma_persistent {name} M=1024 flatten={flatten}",
            _fp8_gemm_tma_persistent_kernel,
            signature,
            constexprs,
            config,
        )


DECODE_PTX = ("griddepcontrol.wait", "griddepcontrol.launch_dependents", "cvt.rn.f16x2.e4m3x2")


def fp8_decode_attention():
    """(label, kernel, signature, constexprs, config, PTX it must hold) of the decode attention over an FP8 cache
    read as words (kernels/fp8_kv_words.py), fp16 dots converted by PTX, launched with PDL: Llama 3 8B's heads
    in both default tiles, single pass and split."""
    from modelgate.kernels.paged_decode_attention import _paged_decode_kernel, default_decode_config

    pointers = dict(out_ptr="*bf16", partial_acc_ptr="*fp32", partial_max_ptr="*fp32", partial_sum_ptr="*fp32")
    pointers.update(counters_ptr="*i32", q_ptr="*bf16", k_cache_ptr="*i32", v_cache_ptr="*i32")
    pointers.update(k_scale_ptr="*fp32", v_scale_ptr="*fp32", block_tables_ptr="*i32", context_lens_ptr="*i32")
    scalars = [name for name in _paged_decode_kernel.arg_names if name.startswith("stride_")]
    scalars += ["sliding_window", "partition_size", "num_heads", "num_partitions"]
    signature = dict(pointers, qk_scale="fp32", **dict.fromkeys(scalars, "i32"))
    for programs, split in ((512, False), (8 * 256, False), (8, True)):  # batch 64 and 256, batch 1 split
        config = default_decode_config(128, programs, SMS)
        constexprs = dict(QUERIES_PER_KV=4, GROUP_PAD=16, GROUP_POW2=4, HEAD_DIM=128, HEAD_DIM_PAD=128)
        constexprs.update(BLOCK_SIZE=16, BLOCK_N=config.block_n, HAS_WINDOW=False, IS_FP8=True, SPLIT=split)
        constexprs.update(COMBINE_BLOCK=16, UPCAST_DOT=False, DOT_PRECISION=None, WORDS=True, HALF_DOTS=True)
        constexprs.update(PTX_CONVERT=True, PDL=True)
        label = f"paged_decode FP8 words n{config.block_n} w{config.num_warps}{' split' if split else ''}"
        yield label, _paged_decode_kernel, signature, constexprs, config, DECODE_PTX


PREFILL_WORDS_PTX = ("cvt.rn.f16x2.e4m3x2",)


def fp8_prefill_attention_words():
    """(label, kernel, signature, constexprs, config, PTX it must hold) of the prefill attention over an FP8 cache
    read as words (prefill_attention.FP8_WORDS), fp16 dots converted by PTX: Llama 3 8B's heads on the default
    128-row tile and on the short-query tile of a mixed step's decodes."""
    from modelgate.kernels.prefill_attention import (
        SHORT_QUERY_CONFIG,
        _prefill_attention_kernel,
        default_prefill_config,
    )

    pointers = dict(out_ptr="*bf16", q_ptr="*bf16", k_cache_ptr="*i32", v_cache_ptr="*i32", k_scale_ptr="*fp32")
    pointers.update(v_scale_ptr="*fp32", block_tables_ptr="*i32", query_start_ptr="*i32", context_lens_ptr="*i32")
    scalars = [name for name in _prefill_attention_kernel.arg_names if name.startswith("stride_")]
    signature = dict(pointers, qk_scale="fp32", sliding_window="i32", **dict.fromkeys(scalars, "i32"))
    for label, config in (("128-row", default_prefill_config(128)), ("short-query", SHORT_QUERY_CONFIG)):
        constexprs = dict(QUERIES_PER_KV=4, GROUP_PAD=4, BLOCK_Q=config.block_m // 4, HEAD_DIM=128, HEAD_DIM_PAD=128)
        constexprs.update(BLOCK_SIZE=16, BLOCK_N=config.block_n, HAS_WINDOW=False, IS_FP8=True, UPCAST_DOT=False)
        constexprs.update(DOT_PRECISION=None, WORDS=True, PTX_CONVERT=True)
        yield f"prefill FP8 words {label}", _prefill_attention_kernel, signature, constexprs, config, PREFILL_WORDS_PTX


def main() -> int:
    kernels = [(*entry, ()) for entry in (*fused_silu_gemms(), *persistent_tma_gemms())]
    kernels += list(pdl_tma_gemms()) + list(fp8_decode_attention()) + list(fp8_prefill_attention_words())
    for label, kernel, signature, constexprs, config, ptx_needs in kernels:
        try:
            shared = _compile(kernel, signature, constexprs, config, ptx_needs)
        except Exception as error:  # noqa: BLE001 - reported with the kernel's name, then a non-zero exit
            print(f"{label}: FAILED {type(error).__name__}: {error}")
            return 1
        print(f"{label}: ok, {shared} bytes of shared memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
