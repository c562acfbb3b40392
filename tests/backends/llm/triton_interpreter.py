"""Run the Triton kernels under the interpreter when there is no GPU: call before importing anything of kernels/.

TRITON_INTERPRET must be set before a kernel module is imported (triton reads it when a kernel is defined), so
kernel modules imported earlier without it (by another test module of the same session) are dropped, with the
modules that bound their kernels at import, and are imported again under the interpreter.
"""

import os
import sys

import torch

_BINDING_KERNELS = ("modelgate.backends.llm.attention.triton_paged", "modelgate.backends.llm.layers.fp8_linear")


def interpret_kernels_without_cuda() -> None:
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return
    os.environ["TRITON_INTERPRET"] = "1"
    for name in [n for n in sys.modules if n.startswith("modelgate.kernels.") or n in _BINDING_KERNELS]:
        del sys.modules[name]
