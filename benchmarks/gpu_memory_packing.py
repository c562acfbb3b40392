"""Many models on one GPU: the memory ledger against NVML, the LLM's share, and LRU eviction under load.

Part 1 ("ledger"): `modelgate serve` over 8 ResNet-50-sized TorchScript models (KIND_GPU, dynamic batching up
to 64) and a Llama-3-8B-shaped LLM (FP8 weights and KV cache). Prints each model's ledger figure, the ledger's
sum per process against NVML's per-process figure for the server and the engine process, and the KV cache the
LLM got against what the others left.

Part 2 ("evict"): the 8 ResNets again, `--model-control-mode explicit --model-load-on-demand` under a
`--gpu-memory-limit` that holds about 4 of them; clients send requests to all 8 (most to 4 hot ones) for
--duration seconds. Prints requests, failures (the goal: 0), loads on demand and evictions.

    python benchmarks/gpu_memory_packing.py --checkpoint /tmp/llama8b [--parts ledger,evict] [--duration 60]
"""

from __future__ import annotations

import argparse
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESNETS = [f"resnet50_{i}" for i in range(8)]
RESNET_CONFIG = """name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 64
input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] }} ]
output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1000 ] }} ]
instance_group [ {{ count: 1 kind: KIND_GPU }} ]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
"""
LLM_CONFIG = """name: "llama8b"
backend: "llm"
parameters { key: "quantization" value { string_value: "fp8" } }
parameters { key: "kv_cache_dtype" value { string_value: "fp8" } }
parameters { key: "max_num_seqs" value { string_value: "256" } }
parameters { key: "max_model_len" value { string_value: "4096" } }
parameters { key: "show_progress" value { string_value: "false" } }
"""
GIB = 2**30


def build_resnets(repository: Path) -> None:
    import torch

    from benchmarks.torchscript_batching import ResNet50

    torch.manual_seed(0)
    resnet = torch.jit.script(ResNet50().eval())
    for name in RESNETS:
        (repository / name / "1").mkdir(parents=True)
        resnet.save(str(repository / name / "1" / "model.pt"))
        (repository / name / "config.pbtxt").write_text(RESNET_CONFIG.format(name=name))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, repository: Path, log: Path, *flags: str):
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        command = [sys.executable, "-m", "modelgate", "serve", "--model-repository", str(repository)]
        command += ["--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics)]
        self.log = log
        self.process = subprocess.Popen([*command, *flags], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"modelgate exited:\n{log.read_text()[-4000:]}")
            if "modelgate ready" in log.read_text():
                return
            time.sleep(1)
        raise RuntimeError("modelgate did not start in 900 s")

    def get(self, path: str) -> dict:
        return requests.get(f"http://127.0.0.1:{self.http}{path}", timeout=60).json()

    def metric(self, name: str) -> float:
        text = requests.get(f"http://127.0.0.1:{self.metrics}/metrics", timeout=60).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def nvml_process_bytes() -> dict[int, int]:
    import pynvml

    from modelgate.core.nvml import nvml_gpus

    return {p.pid: p.usedGpuMemory or 0 for p in pynvml.nvmlDeviceGetComputeRunningProcesses(nvml_gpus()[0].handle)}


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def ledger_part(checkpoint: Path, out: Path) -> dict[str, int]:
    repository = Path(tempfile.mkdtemp())
    build_resnets(repository)
    (repository / "llama8b").mkdir()
    (repository / "llama8b" / "1").symlink_to(checkpoint)
    (repository / "llama8b" / "config.pbtxt").write_text(LLM_CONFIG)
    server = Server(repository, out / "ledger_server.log")
    try:
        ledger = {}
        for name in [*RESNETS, "llama8b"]:
            usage = server.get(f"/v2/models/{name}/stats")["model_stats"][0]["memory_usage"]
            ledger[name] = sum(u["byte_size"] for u in usage if u["type"] == "GPU")
        nvml = nvml_process_bytes()
        engines = [pid for pid in children(server.process.pid) if pid in nvml]
        print("\n| model | ledger GiB |\n| --- | --- |")
        for name, count in ledger.items():
            print(f"| {name} | {count / GIB:.3f} |")
        server_ledger = sum(ledger[name] for name in RESNETS)
        rows = [("server process (8 ResNets, CUDA context)", server_ledger, nvml.get(server.process.pid, 0))]
        rows.append(("LLM engine process", ledger["llama8b"], sum(nvml[pid] for pid in engines)))
        print("\n| process | ledger GiB | NVML GiB | ledger / NVML |\n| --- | --- | --- | --- |")
        for label, count, measured in rows:
            ratio = count / measured if measured else float("nan")
            print(f"| {label} | {count / GIB:.3f} | {measured / GIB:.3f} | {ratio:.3f} |")
        import pynvml

        from modelgate.core.nvml import nvml_gpus

        total = pynvml.nvmlDeviceGetMemoryInfo(nvml_gpus()[0].handle).total
        kv = re.findall(r"KV cache: (\d+) blocks of (\d+) tokens \(([\d.]+) GiB\)", server.log.read_text())
        print(
            f"\nGPU {total / GIB:.1f} GiB; the 8 ResNets and the server's context hold {server_ledger / GIB:.2f} GiB;"
        )
        print(f"the LLM's budget (90% of the GPU less theirs): {(0.9 * total - server_ledger) / GIB:.2f} GiB;")
        print(f"its KV cache: {kv[-1][0]} blocks of {kv[-1][1]} tokens, {kv[-1][2]} GiB" if kv else "no KV line in log")
        return ledger
    finally:
        server.stop()


def evict_part(out: Path, duration: float, per_model: int, first: int) -> None:
    import tritonclient.grpc as grpcclient

    repository = Path(tempfile.mkdtemp())
    build_resnets(repository)
    limit = first + int(3.5 * per_model)  # the first load carries the CUDA context: about 4 models fit
    server = Server(
        repository,
        out / "evict_server.log",
        "--model-control-mode",
        "explicit",
        "--model-load-on-demand",
        "--gpu-memory-limit",
        str(limit),
    )
    sent, failed, errors = [0], [0], []
    stop = time.monotonic() + duration
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)

    def client(seed: int) -> None:
        chooser = random.Random(seed)
        connection = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
        tensor = grpcclient.InferInput("INPUT__0", [1, 3, 224, 224], "FP32")
        tensor.set_data_from_numpy(image)
        while time.monotonic() < stop:
            hot = chooser.random() < 0.8
            name = chooser.choice(RESNETS[:4] if hot else RESNETS[4:])
            try:
                connection.infer(name, [tensor], client_timeout=300)
            except Exception as exc:  # every failure counts; the first few are printed
                failed[0] += 1
                if len(errors) < 5:
                    errors.append(str(exc)[:300])
            sent[0] += 1
        connection.close()

    try:
        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(16)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        print(f"\nLRU under load: limit {limit / GIB:.2f} GiB (~4 of 8 ResNets), 16 clients, {elapsed:.0f} s")
        print(
            "| requests | failed | req/s | loads on demand | evictions | refusals |\n| --- | --- | --- | --- | --- | --- |"
        )
        print(
            f"| {sent[0]} | {failed[0]} | {sent[0] / elapsed:.0f} | {server.metric('modelgate_model_loads_on_demand_total'):.0f}"
            f" | {server.metric('modelgate_model_evictions_total'):.0f}"
            f" | {server.metric('modelgate_model_load_refusals_total'):.0f} |"
        )
        for error in errors:
            print("error:", error)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a Llama-3-8B-shaped checkpoint folder")
    parser.add_argument("--parts", default="ledger,evict")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu-memory-packing"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    ledger = ledger_part(args.checkpoint, args.out) if "ledger" in parts else {}
    if "evict" in parts:
        figures = sorted(ledger[name] for name in RESNETS) if ledger else [GIB, GIB]
        evict_part(args.out, args.duration, per_model=figures[len(figures) // 2], first=figures[-1])


if __name__ == "__main__":
    main()
