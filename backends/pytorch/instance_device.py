"""The device of one instance: the CPU, or one CUDA device with the instance's own stream.

Each GPU instance enqueues its copies and kernels on a stream of its own, so two instances on
one GPU overlap instead of serializing on the default stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from modelgate.backends.base import InstanceSpec
from modelgate.core.errors import ConfigError


@dataclass
class InstanceDevice:
    device: torch.device
    stream: torch.cuda.Stream | None = None  # None on the CPU

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Make this device and stream current for the calling thread (a no-op on the CPU)."""
        if self.stream is None:
            yield
            return
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            yield

    def wait_for_default_stream(self, device: torch.device) -> None:
        """Order this instance's stream after the work queued so far on `device`'s default stream, where the
        server read the tensors of a CUDA shared-memory region (a no-op on the CPU and for host tensors)."""
        if self.stream is not None and device.type == "cuda":
            self.stream.wait_stream(torch.cuda.default_stream(device))

    def synchronize(self) -> None:
        """Wait for the work this instance queued (so timings measure the work, not the launch)."""
        if self.stream is not None:
            self.stream.synchronize()


def instance_device(spec: InstanceSpec) -> InstanceDevice:
    """`cpu` for KIND_CPU; `cuda:<device_id>` with a new stream for KIND_GPU, or a ConfigError saying why not."""
    if spec.kind != "GPU":
        return InstanceDevice(torch.device("cpu"))
    where = f"model '{spec.model_name}' instance '{spec.instance_name}'"
    if not torch.cuda.is_available():
        raise ConfigError(
            where,
            "instance_group.kind",
            f"KIND_GPU needs CUDA, but this torch ({torch.__version__}) sees no CUDA device; use KIND_CPU "
            "or run on a machine with a GPU and a CUDA build of torch",
        )
    count = torch.cuda.device_count()
    if spec.device_id >= count:
        raise ConfigError(
            where, "instance_group.gpus", f"GPU {spec.device_id} does not exist; devices 0..{count - 1} are visible"
        )
    device = torch.device("cuda", spec.device_id)
    return InstanceDevice(device, torch.cuda.Stream(device=device))
