"""Does packing pay? 4 ResNet-50-sized models sharing one GPU, against the same 4 one after another and the GPU
alone.

- GPU alone: the TorchScript model called in-process on CUDA tensors at the batch sizes the server formed (and
  at 64), images per second.
- Packed: `modelgate serve` with the 4 models (KIND_GPU, dynamic batching up to 64), loaded over gRPC with
  `--client-batch` (default 1) FP32 3x224x224 images per request, by one of:
  - `--packed-via clients`: one perf_analyzer (C++) per model at once; the sum of their images per second;
  - `--packed-via ensemble`: one perf_analyzer on an ensemble whose 4 steps are the 4 models, each fed the
    request's images; 4 times its images per second (each image is inferred by every model).
- One after another: the same server, one perf_analyzer at a time on each model; the mean of the 4 rates.

    python benchmarks/gpu_packing_throughput.py --perf-analyzer clients/perf_analyzer/run_perf_analyzer.sh
    python benchmarks/gpu_packing_throughput.py --shared-memory cuda --client-batch 8   # images on the GPU

`--shared-memory system|cuda` has perf_analyzer put each request's images in a shared-memory region it
registers with the server (`--shared-memory` of perf_analyzer): the request then carries no 602 KB of pixels,
and with `cuda` the server hands the region's tensor to the model on the GPU without a host copy. Only one
perf_analyzer can use shared memory against a server at a time: each unregisters every region when it starts
(and names its own after the input and its thread, the same for every model here). So with shared memory the
packed case goes through the ensemble, which one perf_analyzer drives.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_memory_packing import RESNETS, Server, build_resnets  # noqa: E402

MODELS = RESNETS[:4]
ENSEMBLE = "resnet50_x4"
_THROUGHPUT = re.compile(r"Concurrency: \d+, throughput: ([\d.]+) infer/sec")
# Each measurement window's rate; perf_analyzer prints no summary line when the windows never agreed within
# --stability-percentage (4 servers' worth of clients on one machine rarely do), and then their mean stands in.
_PASS_THROUGHPUT = re.compile(r"Pass \[\d+\] throughput: ([\d.]+) infer/sec")


def gpu_alone(repository: Path, batch_sizes: list[int], seconds: float = 5.0) -> dict[int, float]:
    """Images per second of the model called in-process on the GPU, per batch size."""
    model = torch.jit.load(str(repository / MODELS[0] / "1" / "model.pt"), map_location="cuda").eval()
    rates = {}
    with torch.inference_mode():
        for batch in batch_sizes:
            images = torch.randn(batch, 3, 224, 224, device="cuda")
            for _ in range(5):
                model(images)
            torch.cuda.synchronize()
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                model(images)
                calls += 1
            torch.cuda.synchronize()
            rates[batch] = calls * batch / (time.perf_counter() - started)
    del model
    torch.cuda.empty_cache()
    return rates


def write_ensemble(repository: Path) -> None:
    """`ENSEMBLE`: IMAGE goes to each of MODELS; model i's scores come back as SCORES_i."""
    steps = "".join(
        f'''  step [ {{ model_name: "{name}" model_version: -1
           input_map {{ key: "INPUT__0" value: "IMAGE" }} output_map {{ key: "OUTPUT__0" value: "SCORES_{i}" }} }} ]
'''
        for i, name in enumerate(MODELS)
    )
    outputs = ", ".join(f'{{ name: "SCORES_{i}" data_type: TYPE_FP32 dims: [ 1000 ] }}' for i in range(len(MODELS)))
    (repository / ENSEMBLE / "1").mkdir(parents=True)
    (repository / ENSEMBLE / "config.pbtxt").write_text(
        f'''name: "{ENSEMBLE}"
platform: "ensemble"
max_batch_size: 64
input [ {{ name: "IMAGE" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] }} ]
output [ {outputs} ]
ensemble_scheduling {{
{steps}}}
'''
    )


@dataclass(frozen=True)
class Load:
    """How each perf_analyzer loads its model."""

    tool: str
    port: int
    concurrency: int
    seconds: float
    shared_memory: str = "none"
    client_batch: int = 1


def perf_analyzer(load: Load, model: str) -> subprocess.Popen:
    command = [load.tool, "-m", model, "-i", "grpc", "-u", f"127.0.0.1:{load.port}"]
    command += ["--concurrency-range", str(load.concurrency), "-b", str(load.client_batch)]
    command += ["--shared-memory", load.shared_memory]
    command += ["--measurement-interval", str(int(load.seconds * 1000)), "--max-trials", "3"]
    command += ["--stability-percentage", "50", "-v"]  # -v: each window's rate (Pass [n]), rate_of's fallback
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rate_of(process: subprocess.Popen, log: Path) -> float:
    output = process.communicate()[0]
    with log.open("a") as sink:
        sink.write(output)
    found = _THROUGHPUT.findall(output)
    if not found and (passes := _PASS_THROUGHPUT.findall(output)):
        return sum(float(rate) for rate in passes) / len(passes)
    if not found:
        raise RuntimeError(f"perf_analyzer printed no throughput:\n{output[-2000:]}")
    return float(found[-1])


def batch_sizes_formed(server: Server) -> dict[int, int]:
    counts: dict[int, int] = {}
    for name in MODELS:
        for row in server.get(f"/v2/models/{name}/stats")["model_stats"][0]["batch_stats"]:
            counts[row["batch_size"]] = counts.get(row["batch_size"], 0) + row["compute_infer"]["count"]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perf-analyzer", default=str(ROOT / "clients/perf_analyzer/run_perf_analyzer.sh"))
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per perf_analyzer")
    parser.add_argument("--seconds", type=float, default=10.0, help="perf_analyzer's measurement interval")
    parser.add_argument("--shared-memory", choices=["none", "system", "cuda"], default="none")
    parser.add_argument("--client-batch", type=int, default=1, help="images per request (perf_analyzer -b)")
    parser.add_argument(
        "--packed-via",
        choices=["clients", "ensemble"],
        help="how the 4 models are loaded at once (default: clients, or ensemble with shared memory)",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu-packing-throughput"))
    args = parser.parse_args()
    via = args.packed_via or ("clients" if args.shared_memory == "none" else "ensemble")
    if via == "clients" and args.shared_memory != "none":
        parser.error(
            "--packed-via clients cannot use shared memory: each perf_analyzer unregisters the others' regions"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    repository = Path(tempfile.mkdtemp())
    build_resnets(repository)
    for name in RESNETS[4:]:
        subprocess.run(["rm", "-rf", str(repository / name)], check=True)
    write_ensemble(repository)
    log = args.out / "perf_analyzer.log"
    flags = [] if args.shared_memory == "none" else ["--allow-shared-memory", "true"]
    server = Server(repository, args.out / "server.log", *flags)
    load = Load(args.perf_analyzer, server.grpc, args.concurrency, args.seconds, args.shared_memory, args.client_batch)
    try:
        if via == "clients":
            packed = sum(rate_of(p, log) for p in [perf_analyzer(load, m) for m in MODELS])
        else:
            packed = len(MODELS) * rate_of(perf_analyzer(load, ENSEMBLE), log)
        formed = batch_sizes_formed(server)  # the packed run's batches
        alone = [rate_of(perf_analyzer(load, m), log) for m in MODELS]
    finally:
        server.stop()
    common = sorted(formed, key=lambda size: -formed[size])[:3]
    gpu = gpu_alone(repository, sorted(set(common) | {64}))
    weighted = sum(formed[b] * b for b in common) / sum(formed[b] for b in common)
    gpu_at_formed = sum(formed[b] * gpu[b] for b in common) / sum(formed[b] for b in common)
    print(
        f"\n{torch.cuda.get_device_name()}: 4 ResNet-50s (FP32, 3x224x224), perf_analyzer gRPC, "
        f"concurrency {args.concurrency} per perf_analyzer, "
        f"{args.client_batch} image(s) per request, shared memory: {args.shared_memory}, packed via {via}"
    )
    print(f"batches the server formed (size: executions): {dict(sorted(formed.items()))}")
    print("\n| serving | img/s | vs GPU alone at the formed batches |\n| --- | --- | --- |")
    print(f"| packed: 4 models at once | {packed:.0f} | {packed / gpu_at_formed:.2f} |")
    print(f"| one model at a time (mean of 4) | {sum(alone) / 4:.0f} | {sum(alone) / 4 / gpu_at_formed:.2f} |")
    for batch in sorted(gpu):
        print(f"| GPU alone, in-process, batch {batch} | {gpu[batch]:.0f} | {gpu[batch] / gpu_at_formed:.2f} |")
    print(f"\nmean formed batch {weighted:.1f}")
    print(f"packed / one at a time: {packed / (sum(alone) / 4):.2f}")
    print(f"packed / GPU alone at batch 64: {packed / gpu[64]:.2f}")


if __name__ == "__main__":
    main()
