"""The parallel state of this process: its rank, its place in the layout (layout.py: tensor-parallel rank and
pipeline stage) and its process groups.

Rank 0 is the engine process (scheduler, sampling, the server's pipes); ranks 1..N-1 are worker processes
(worker_main.py) that run the same step on their shard and stage. `current()` is None in a single-process
engine, so every hook elsewhere is one `if` that does nothing without tensor or pipeline parallelism.

Two groups, for two kinds of traffic, and the default group for the third:
- `device_group`: the activations' collectives (all-reduce after o_proj and down_proj, the embedding's
  all-reduce, the logits' gather) among this stage's tensor-parallel ranks, NCCL on GPUs, gloo on the CPU
  (None without tensor parallelism: nothing to reduce).
- `step_group`: the scheduler's step, broadcast by rank 0 (step_channel.py), always gloo on host tensors:
  workers then read the step's host-side lists (query starts, context lengths) without a device round trip.
  An idle engine sends nothing for as long as it stays idle, so this group's timeout is long; dead peers are
  found by watching processes (workers.py, worker_main.py), not by collective timeouts.
- the default (world) group, the device's backend: the pipeline's point-to-point sends of hidden states and
  logits (pipeline.py).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist

from modelgate.backends.llm.parallel.layout import ParallelLayout

# A collective of the forward that waits this long means a rank is stuck, not slow: fail rather than hang.
DEVICE_TIMEOUT = datetime.timedelta(minutes=10)
# Workers wait for the next step in a broadcast for as long as the engine is idle.
STEP_TIMEOUT = datetime.timedelta(days=365)
STORE_HOST = "127.0.0.1"  # the ranks are processes of one machine; they meet at rank 0's TCPStore there


@dataclass(frozen=True)
class TensorParallel:
    rank: int  # in the whole engine (0: the driver)
    world_size: int  # every rank: tensor_parallel_size × pipeline_parallel_size
    device_group: object  # dist.ProcessGroup of this stage's tensor-parallel ranks; None with one of them
    step_group: object  # dist.ProcessGroup, gloo, every rank
    layout: ParallelLayout

    @property
    def is_driver(self) -> bool:
        """Rank 0: schedules, broadcasts each step, samples."""
        return self.rank == 0

    @property
    def tp_rank(self) -> int:
        """This rank's place among its stage's tensor-parallel ranks (its shard of each layer)."""
        return self.layout.tp_rank_of(self.rank)

    @property
    def tp_size(self) -> int:
        return self.layout.tensor_parallel_size

    @property
    def stage(self) -> int:
        return self.layout.stage_of(self.rank)

    @property
    def num_stages(self) -> int:
        return self.layout.pipeline_parallel_size

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over this stage's tensor-parallel ranks in place; returns it.

        CUDA graphs: an in-place NCCL all_reduce on the current stream is capturable (PyTorch registers the
        capture with its NCCL process group), so the decode graphs of cuda_graphs.py record it like any kernel;
        every rank must capture the same graphs in the same order, which they do (each rank's ModelRunner runs
        the same capture code). Not tested here: no multi-GPU machine.
        """
        dist.all_reduce(tensor, group=self.device_group)
        return tensor

    def all_gather_last_dim(self, tensor: torch.Tensor) -> torch.Tensor:
        """[rows, n] on each of the stage's tensor-parallel ranks -> [rows, tp_size * n], tensor-parallel rank
        t's columns at [t * n, (t + 1) * n)."""
        pieces = [torch.empty_like(tensor) for _ in range(self.tp_size)]
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


def initialize(
    rank: int, layout: ParallelLayout, store_host: str, store_port: int, device: torch.device, store=None
) -> TensorParallel:
    """Join the process group (rank 0 passes the TCPStore it created, the others connect to it)."""
    global _current
    world_size = layout.world_size
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
    _current = TensorParallel(rank, world_size, _stage_group(rank, layout), step_group, layout)
    return _current


def _stage_group(rank: int, layout: ParallelLayout):
    """This rank's stage's tensor-parallel group: the world with one stage, None with one rank a stage."""
    if layout.pipeline_parallel_size == 1:
        return dist.group.WORLD
    if layout.tensor_parallel_size == 1:
        return None
    ours = None
    # Every rank creates every stage's group, in the same order: new_group is a collective of the world.
    for stage in range(layout.pipeline_parallel_size):
        group = dist.new_group(layout.stage_ranks(stage), timeout=DEVICE_TIMEOUT)
        if stage == layout.stage_of(rank):
            ours = group
    return ours


def shutdown() -> None:
    global _current
    if _current is not None and dist.is_initialized():
        dist.destroy_process_group()
    _current = None
