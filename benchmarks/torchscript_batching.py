"""Dynamic batching on a ResNet-50-sized TorchScript model, and the server's own overhead.

Starts `modelgate serve` (a subprocess) over a temporary repository with:
  - resnet50_batched: dynamic_batching (preferred 16/32, 2 ms queue delay), max_batch_size 32;
  - resnet50_direct: the same model.pt, no dynamic batching (one request per forward);
  - trivial: a TorchScript identity on one small tensor.
Drives each with `modelgate bench tensor` over gRPC (batch 1 per request, FP32 3x224x224 images), then runs
the trivial model's backend instance in-process (no server) to price the server's overhead. The batched model
runs a second time with its images in system shared memory (`bench tensor --shared-memory system`: requests
name a registered region instead of carrying 602 KB each), and once more in-process at batch 32 without the
server: what the GPU can do with this model, the ceiling of the served figures.

    python benchmarks/torchscript_batching.py                 # on the GPU: KIND_GPU instances
    python benchmarks/torchscript_batching.py --cpu --duration 5   # smoke run on a CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelgate.clients.bench.tensor_bench import TensorBenchSettings, run_tensor_bench  # noqa: E402


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        width, out = planes, planes * 4
        self.conv1, self.bn1 = nn.Conv2d(inplanes, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            if stride != 1 or inplanes != out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + self.downsample(x))


class ResNet50(nn.Module):
    """ResNet-50's layer shapes (3-4-6-3 bottlenecks, 25.6M parameters), random weights."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        layers, inplanes = [], 64
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for index in range(blocks):
                layers.append(Bottleneck(inplanes, planes, stride if index == 0 else 1))
                inplanes = planes * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, INPUT__0: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(INPUT__0))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Identity(nn.Module):
    def forward(self, INPUT__0: torch.Tensor) -> torch.Tensor:
        return INPUT__0


RESNET_CONFIG = """
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 32
input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] }} ]
output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1000 ] }} ]
instance_group [ {{ count: 1 kind: {kind} }} ]
{batching}
"""
TRIVIAL_CONFIG = """
name: "trivial"
platform: "pytorch_libtorch"
max_batch_size: 0
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { count: 1 kind: KIND } ]
"""


def build_repository(root: Path, kind: str) -> None:
    torch.manual_seed(0)
    resnet = torch.jit.script(ResNet50().eval())
    batching = {
        "resnet50_batched": "dynamic_batching { preferred_batch_size: [ 16, 32 ] max_queue_delay_microseconds: 2000 }",
        "resnet50_direct": "",
    }
    for name, text in batching.items():
        (root / name / "1").mkdir(parents=True)
        resnet.save(str(root / name / "1" / "model.pt"))
        (root / name / "config.pbtxt").write_text(RESNET_CONFIG.format(name=name, kind=kind, batching=text))
    (root / "trivial" / "1").mkdir(parents=True)
    torch.jit.script(Identity()).save(str(root / "trivial" / "1" / "model.pt"))
    (root / "trivial" / "config.pbtxt").write_text(TRIVIAL_CONFIG.replace("KIND", kind))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(repository: Path) -> tuple[subprocess.Popen, int]:
    grpc_port = free_port()
    command = [
        sys.executable,
        "-m",
        "modelgate",
        "serve",
        "--model-repository",
        str(repository),
        "--http-port",
        str(free_port()),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(free_port()),
        "--allow-shared-memory",
        "true",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parent.parent
    )
    for line in process.stdout:
        if "modelgate ready" in line:
            return process, grpc_port
        if "failed to load" in line:
            print(line.rstrip())
    raise RuntimeError("modelgate did not start")


def bench(grpc_port: int, model: str, concurrency: int, duration: float, shared_memory: str = "none"):
    settings = TensorBenchSettings(
        url=f"127.0.0.1:{grpc_port}",
        protocol="grpc",
        model=model,
        concurrency=[concurrency],
        duration_s=duration,
        warmup_requests=20,
        shared_memory=shared_memory,
    )
    return run_tensor_bench(settings).levels[0]


def load_instance(repository: Path, name: str):
    """The model's backend instance, loaded as the server would, in this process."""
    from modelgate.backends.pytorch.backend import PyTorchBackend
    from modelgate.server.loaded_model import instance_specs
    from modelgate.server.repository.config_completion import complete_model_config, read_model_config

    model_dir = repository / name
    config, source = read_model_config(model_dir, name, None)
    config, _, _ = complete_model_config(config, source, model_dir, name)
    spec = instance_specs(config, model_dir, 1)[0]
    if spec.device_id < 0:  # a KIND_GPU group without `gpus`: the server's memory ledger would place it; here GPU 0
        spec = dataclasses.replace(spec, device_id=0)
    return PyTorchBackend().load_instance(spec)


def seconds_per_execute(instance, request, iterations: int) -> float:
    for _ in range(min(50, iterations)):
        instance.execute([request])
    started = time.perf_counter()
    for _ in range(iterations):
        instance.execute([request])
    return (time.perf_counter() - started) / iterations


def in_process_latency_us(repository: Path, iterations: int) -> float:
    """The trivial model's backend instance called directly: what a request costs without the server."""
    from modelgate.core.inference_types import InferRequest, InferTensor

    instance = load_instance(repository, "trivial")
    data = np.ones(4, np.float32)
    request = InferRequest("trivial", inputs={"INPUT__0": InferTensor("INPUT__0", "FP32", (4,), data)})
    elapsed = seconds_per_execute(instance, request, iterations)
    instance.unload()
    return elapsed * 1e6


def model_alone_images_per_s(repository: Path, batch: int, iterations: int) -> float:
    """ResNet-50 executed by its backend instance in-process on batches of `batch` host images: no server."""
    from modelgate.core.inference_types import InferRequest, InferTensor

    instance = load_instance(repository, "resnet50_batched")
    images = np.random.default_rng(0).random((batch, 3, 224, 224), dtype=np.float32)
    request = InferRequest(
        "resnet50_batched", inputs={"INPUT__0": InferTensor("INPUT__0", "FP32", images.shape, images)}
    )
    elapsed = seconds_per_execute(instance, request, iterations)
    instance.unload()
    return batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measured case")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cpu", action="store_true", help="KIND_CPU instances (a smoke run without a GPU)")
    args = parser.parse_args()
    kind = "KIND_CPU" if args.cpu or not torch.cuda.is_available() else "KIND_GPU"
    with tempfile.TemporaryDirectory(prefix="modelgate-bench-") as folder:
        repository = Path(folder)
        build_repository(repository, kind)
        process, grpc_port = start_server(repository)
        try:
            batched = bench(grpc_port, "resnet50_batched", args.concurrency, args.duration)
            shared = bench(grpc_port, "resnet50_batched", args.concurrency, args.duration, "system")
            direct = bench(grpc_port, "resnet50_direct", args.concurrency, args.duration)
            trivial = bench(grpc_port, "trivial", 1, args.duration)
        finally:
            process.terminate()
            process.wait(30)
        in_process = in_process_latency_us(repository, 2000)
        alone = model_alone_images_per_s(repository, 32, 10 if kind == "KIND_CPU" else 200)
    device = torch.cuda.get_device_name() if kind == "KIND_GPU" else "CPU"
    print(f"\nResNet-50-sized TorchScript (random weights), {kind} on {device}, gRPC, batch 1 per request")
    print(f"{'case':<52}{'infer/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'vs alone':>10}")
    for label, level in (
        (f"dynamic batching, concurrency {args.concurrency}", batched),
        (f"dynamic batching, shared memory, concurrency {args.concurrency}", shared),
        (f"no batching, concurrency {args.concurrency}", direct),
        ("trivial model, concurrency 1", trivial),
    ):
        latency = level.latency_s or {}
        print(
            f"{label:<52}{level.throughput_per_s:>10.1f}{latency.get('p50', 0) * 1e3:>9.2f}"
            f"{latency.get('p99', 0) * 1e3:>9.2f}{level.num_errors:>8}"
            + (f"{level.throughput_per_s / alone:>10.2f}" if level is not trivial else "")
        )
    print(f"{'the model alone, in-process, batch 32 (images/s)':<52}{alone:>10.1f}")
    print(
        f"\nthroughput ratio, dynamic batching / no batching: {batched.throughput_per_s / direct.throughput_per_s:.2f}"
    )
    server_us = (trivial.latency_s or {}).get("p50", 0) * 1e6
    print(
        f"trivial model: backend in-process {in_process:.0f} us per request, through the server (p50, client "
        f"included) {server_us:.0f} us: the server and the gRPC round trip add {server_us - in_process:.0f} us"
    )


if __name__ == "__main__":
    main()
