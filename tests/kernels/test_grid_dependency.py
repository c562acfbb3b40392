"""Programmatic dependent launch and the L2 prefetch are hints to the hardware: off where they cannot run.

pdl_supported is False for the interpreter and the CPU (the instructions do not exist there), so the GEMV's
PDL and prefetch options leave its results unchanged there; on a Hopper GPU they change only when the weights
are read (the GEMV GPU tests also compare chains of PDL launches and graph replays with plain launches).
"""

import torch

from modelgate.kernels.fp8_gemv import GemvConfig, _fp8_gemv_kernel, fp8_gemv
from modelgate.kernels.grid_dependency import pdl_supported
from tests.kernels.test_fp8_gemv import SMALL_SPLIT, make_problem


def test_not_supported_on_the_cpu():
    assert not pdl_supported(_fp8_gemv_kernel, torch.device("cpu"))


def test_gemv_options_do_not_change_results(dev):
    x, w_fp8, w_scales, _ = make_problem(37, 300, dev)
    plain = fp8_gemv(x, w_fp8, w_scales, config=SMALL_SPLIT._replace(pdl=False))
    hinted = fp8_gemv(x, w_fp8, w_scales, config=SMALL_SPLIT._replace(pdl=True), prefetch_weights=True)
    assert torch.equal(plain, hinted)
    assert GemvConfig().pdl


def test_the_tma_gemm_prefetch_setting_leaves_results_where_pdl_cannot_run(dev, monkeypatch):
    from modelgate.kernels import fp8_gemm_tma
    from tests.kernels.test_fp8_gemm import make_problem

    _, _, _, x_fp8, x_scales, w_fp8, w_scales = make_problem(5, 48, 96, dev, bias=False)
    plain = fp8_gemm_tma.fp8_linear_tma(x_fp8, x_scales, w_fp8, w_scales)
    monkeypatch.setattr(fp8_gemm_tma, "PDL_PREFETCH_BYTES", 1024)
    assert torch.equal(fp8_gemm_tma.fp8_linear_tma(x_fp8, x_scales, w_fp8, w_scales), plain)
