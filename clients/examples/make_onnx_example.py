"""Build model_repository/simple_onnx/1/model.onnx: OUTPUT = Relu(INPUT @ W + B).

INPUT and OUTPUT are FP32 [batch, 4] with a symbolic batch dimension; W [4, 4] and B [4]
come from a seeded generator, so the file is the same on every run. The model folder has
no config.pbtxt on purpose: the server completes the config from the graph (platform
onnxruntime_onnx, max_batch_size 4, dims [4], dynamic batching).

    python clients/examples/make_onnx_example.py [--repository model_repository]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODEL_NAME = "simple_onnx"
WIDTH = 4
OPSET = 17
IR_VERSION = 8  # loads in every onnxruntime since 1.10


def simple_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(W [4, 4], B [4]) as float32, the same for a given seed."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((WIDTH, WIDTH)).astype(np.float32)
    bias = rng.standard_normal(WIDTH).astype(np.float32)
    return weight, bias


def build_simple_model(seed: int = 0) -> onnx.ModelProto:
    """MatMul + Add + Relu over a dynamic batch: INPUT [batch, 4] -> OUTPUT [batch, 4]."""
    weight, bias = simple_weights(seed)
    nodes = [
        helper.make_node("MatMul", ["INPUT", "W"], ["projected"]),
        helper.make_node("Add", ["projected", "B"], ["shifted"]),
        helper.make_node("Relu", ["shifted"], ["OUTPUT"]),
    ]
    graph = helper.make_graph(
        nodes,
        MODEL_NAME,
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", WIDTH])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelgate")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_model(model: onnx.ModelProto, repository: Path, name: str, version: int = 1) -> Path:
    """Save `model` as <repository>/<name>/<version>/model.onnx; returns the file."""
    path = repository / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path(__file__).resolve().parents[2] / "model_repository")
    args = parser.parse_args()
    print(write_model(build_simple_model(), args.repository, MODEL_NAME))


if __name__ == "__main__":
    main()
