"""The base install (no extras) serves python and PyTorch models over HTTP and gRPC.

A child process hides the extras' packages (onnx, llm, bench) from imports, as if they were not installed,
and serves a copy of the example repository: python and TorchScript models answer, and the ONNX and LLM
models fail to load with an error that says which extra to install.
"""

import json
import subprocess
import sys
import textwrap

from tests.server_harness import EXAMPLE_REPOSITORY

EXTRAS_PACKAGES = [
    "onnxruntime",
    "onnx",
    "triton",
    "tokenizers",
    "safetensors",
    "jinja2",
    "tqdm",
    "matplotlib",
]

CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class HideExtras(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named '{name}'", name=name)

    HIDDEN = set(sys.argv[2].split(","))
    sys.meta_path.insert(0, HideExtras())

    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from modelgate.cli import build_parser
    from tests.server_harness import start_server

    build_parser()  # every subcommand's flags, `bench` and `size` included
    running = start_server([sys.argv[1]])
    http = httpclient.InferenceServerClient(running.http_url)
    grpc = grpcclient.InferenceServerClient(running.grpc_url)
    inputs = [httpclient.InferInput(n, [4], "FP32") for n in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(np.arange(4, dtype=np.float32))
    grpc_input = grpcclient.InferInput("INPUT__0", [1, 4], "FP32")
    grpc_input.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    report = {
        "states": {row["name"]: [row["state"], row.get("reason", "")] for row in http.get_model_repository_index()},
        "add_sub": http.infer("add_sub", inputs).as_numpy("OUTPUT0").tolist(),
        "torchscript_shape": list(grpc.infer("simple_torchscript", [grpc_input]).as_numpy("OUTPUT__0").shape),
        "imported_extras": sorted({m.split(".")[0] for m in sys.modules} & HIDDEN),
    }
    http.close()
    grpc.close()
    running.stop()
    print("REPORT", json.dumps(report))
    """
)


def test_python_and_pytorch_models_serve_without_the_extras(tmp_path):
    import shutil

    for name in ("add_sub", "simple_torchscript", "simple_onnx", "tiny_llm"):
        shutil.copytree(EXAMPLE_REPOSITORY / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), ",".join(EXTRAS_PACKAGES)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT ", 1)[1])
    states = report["states"]
    assert states["add_sub"][0] == "READY" and states["simple_torchscript"][0] == "READY"
    assert report["add_sub"] == [0.0, 2.0, 4.0, 6.0]
    assert report["torchscript_shape"] == [1, 4]
    assert states["simple_onnx"][0] == "UNAVAILABLE" and "modelgate[onnx]" in states["simple_onnx"][1]
    assert states["tiny_llm"][0] == "UNAVAILABLE" and "modelgate[llm]" in states["tiny_llm"][1]
    assert report["imported_extras"] == []
