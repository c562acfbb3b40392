"""benchmarks/switches.py: the engine switches a benchmark variant sets, and puts back."""

import pytest

from benchmarks.switches import Variant, parse_variant, switched
from modelgate.backends.llm.layers.fp8_linear import Fp8Linear
from modelgate.kernels import fp8_gemm_tma

PDL = "modelgate.kernels.fp8_gemm_tma.PDL_PREFETCH_BYTES"
SILU = "modelgate.backends.llm.layers.fp8_linear.Fp8Linear.silu_in_gemm"


def test_a_variant_is_a_label_and_literal_assignments():
    assert parse_variant("base") == Variant("base", ())
    assert parse_variant(f"both:{PDL}=1024,{SILU}=True") == Variant("both", ((PDL, 1024), (SILU, True)))


@pytest.mark.parametrize(
    "text, complaint",
    [
        (":x.y=1", "label"),
        ("a:nodots=1", "module.attribute=value"),
        ("a:x.y", "module.attribute"),
        ("a:x.y=z", "literal"),
    ],
)
def test_a_malformed_variant_is_refused_saying_why(text, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_variant(text)


def test_switches_hold_inside_the_block_only():
    before = (fp8_gemm_tma.PDL_PREFETCH_BYTES, Fp8Linear.silu_in_gemm)
    with switched(parse_variant(f"on:{PDL}=2048,{SILU}={not before[1]}")):
        assert (fp8_gemm_tma.PDL_PREFETCH_BYTES, Fp8Linear.silu_in_gemm) == (2048, not before[1])
    assert (fp8_gemm_tma.PDL_PREFETCH_BYTES, Fp8Linear.silu_in_gemm) == before
    with pytest.raises(RuntimeError), switched(parse_variant(f"on:{PDL}=4096")):
        raise RuntimeError("the benchmark failed")
    assert fp8_gemm_tma.PDL_PREFETCH_BYTES == before[0]


def test_a_misspelt_switch_is_an_error_and_sets_nothing():
    before = fp8_gemm_tma.PDL_PREFETCH_BYTES
    with (
        pytest.raises(AttributeError, match="PDL_PREFETCH_BYTE"),
        switched(parse_variant(f"typo:{PDL}=7,modelgate.kernels.fp8_gemm_tma.PDL_PREFETCH_BYTE=1")),
    ):
        pass
    assert fp8_gemm_tma.PDL_PREFETCH_BYTES == before
    with pytest.raises(ImportError), switched(parse_variant("x:nomodule_here.at_all=1")):
        pass
