"""Test-only torch ops that let a scripted model block, so tests can see batching and concurrency.

The server runs in the test process, so a TorchScript model calling `torch.ops.mgtest.*` runs
these Python functions on the instance's thread:
- `gate(x)`: while GATE is closed, waits (up to 20 s) until it opens; returns a copy of x.
- `rendezvous(x)`: waits until RENDEZVOUS_PARTIES calls are inside it at once (10 s at most,
  else raises), and records the calling thread and, for a CUDA x, the current CUDA stream;
  returns a copy of x.
"""

from __future__ import annotations

import threading

import torch

RENDEZVOUS_PARTIES = 2
GATE_TIMEOUT_S = 20


class Gate:
    def __init__(self):
        self.is_open = threading.Event()
        self.is_open.set()
        self.entered = threading.Event()  # a call is waiting at the closed gate

    def close(self) -> None:
        self.entered.clear()
        self.is_open.clear()

    def open(self) -> None:
        self.is_open.set()


GATE = Gate()
RENDEZVOUS = threading.Barrier(RENDEZVOUS_PARTIES, timeout=10)
RENDEZVOUS_THREADS: list[str] = []
RENDEZVOUS_STREAMS: list[int] = []  # cuda_stream handles; 0 is the default stream


@torch.library.custom_op("mgtest::gate", mutates_args=())
def gate(x: torch.Tensor) -> torch.Tensor:
    if not GATE.is_open.is_set():
        GATE.entered.set()
        GATE.is_open.wait(GATE_TIMEOUT_S)
    return x.clone()


@torch.library.custom_op("mgtest::rendezvous", mutates_args=())
def rendezvous(x: torch.Tensor) -> torch.Tensor:
    RENDEZVOUS_THREADS.append(threading.current_thread().name)
    if x.is_cuda:
        RENDEZVOUS_STREAMS.append(torch.cuda.current_stream(x.device).cuda_stream)
    RENDEZVOUS.wait()  # raises BrokenBarrierError if the other call never comes
    return x.clone()
