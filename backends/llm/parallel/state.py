"""The tensor-parallel state of this process: its rank, the world size and the two process groups.

Rank 0 is the engine process (scheduler, sampling, the server's pipes); ranks 1..N-1 are worker processes
(worker_main.py) that run the same forward on their shard. `current()` is None in a single-process engine, so
every hook elsewhere is one `if` that does nothing without tensor parallelism.

Two groups, for two kinds of traffic:
- `device_group`: the activations' collectives (all-reduce after o_proj and down_proj, the embedding's
  all-reduce, the logits' gather), NCCL on GPUs, gloo on the CPU.
- `step_group`: the scheduler's step, broadcast by rank 0 (step_channel.py), always gloo on host tensors:
  workers then read the step's host-side lists (query starts, context lengths) without a device round trip.
  An idle engine sends nothing for as long as it stays idle, so this group's timeout is long; dead peers are
  found by watching processes (workers.py, worker_main.py), not by collective timeouts.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist

# A collective of the forward that waits this long means a rank is stuck, not slow: fail rather than hang.
DEVICE_TIMEOUT = datetime.timedelta(minutes=10)
# Workers wait for the next step in a broadcast for as long as the engine is idle.
STEP_TIMEOUT = datetime.timedelta(days=365)
STORE_HOST = "127.0.0.1"  # the ranks are processes of one machine; they meet at rank 0's TCPStore there


@dataclass(frozen=True)
class TensorParallel:
    rank: int
    world_size: int
    device_group: object  # dist.ProcessGroup
    step_group: object  # dist.ProcessGroup, gloo

    @property
    def is_driver(self) -> bool:
        """Rank 0: schedules, broadcasts each step, samples."""
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks in place; returns it.

        CUDA graphs: an in-place NCCL all_reduce on the current stream is capturable (PyTorch registers the
        capture with its NCCL process group), so the decode graphs of cuda_graphs.py record it like any kernel;
        every rank must capture the same graphs in the same order, which they do (each rank's ModelRunner runs
        the same capture code). Not tested here: no multi-GPU machine.
        """
        dist.all_reduce(tensor, group=self.device_group)
        return tensor

    def all_gather_last_dim(self, tensor: torch.Tensor) -> torch.Tensor:
        """[rows, n] on each rank -> [rows, world_size * n], rank r's columns at [r * n, (r + 1) * n)."""
        pieces = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(pieces, tensor.contiguous(), group=self.device_group)
        return torch.cat(pieces, dim=-1)

    def min_over_ranks(self, value: int) -> int:
        """The smallest of every rank's `value` (e.g. the KV blocks each GPU can hold: all must agree)."""
        tensor = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=self.step_group)
        return int(tensor.item())


_current: TensorParallel | None = None


def current() -> TensorParallel | None:
    """This process's tensor-parallel state; None without tensor parallelism."""
    return _current


def initialize(rank: int, world_size: int, store_host: str, store_port: int, device: torch.device, store=None):
    """Join the process group (rank 0 passes the TCPStore it created, the others connect to it)."""
    global _current
    if store is None:
        store = dist.TCPStore(store_host, store_port, world_size, is_master=False, timeout=DEVICE_TIMEOUT)
    if device.type == "cuda":
        # The current device too, not only the tensors': Triton launches its kernels on the current device, and
        # rank r's is cuda:r (a process starts on cuda:0).
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    options = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=DEVICE_TIMEOUT, **options)
    step_group = dist.new_group(backend="gloo", timeout=STEP_TIMEOUT)
    _current = TensorParallel(rank, world_size, dist.group.WORLD, step_group)
    return _current


def shutdown() -> None:
    global _current
    if _current is not None and dist.is_initialized():
        dist.destroy_process_group()
    _current = None
