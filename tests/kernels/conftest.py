"""Kernel tests run on the CPU under the Triton interpreter when no CUDA device is present.

TRITON_INTERPRET is read when a @triton.jit function is defined, so it must be set before the kernel modules
are imported; kernel modules that another test imported earlier (without the interpreter) are dropped from
sys.modules, so that the test modules here import them afresh.
"""

import os
import sys

import pytest
import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    os.environ["TRITON_INTERPRET"] = "1"
    for name in [name for name in sys.modules if name.startswith("modelgate.kernels.")]:
        del sys.modules[name]


@pytest.fixture
def dev() -> torch.device:
    """cuda when there is one, else the CPU (with the interpreter)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def cuda(request) -> torch.device:
    """The CUDA device, for tests marked gpu only (tests/conftest.py skips those on a machine without one)."""
    assert request.node.get_closest_marker("gpu") is not None, f"{request.node.name} needs CUDA: mark it gpu"
    return torch.device("cuda")
