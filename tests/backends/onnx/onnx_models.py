"""Small ONNX graphs for the backend's tests, written into a model repository with onnx.helper."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from modelgate.clients.examples.make_onnx_example import IR_VERSION, OPSET, build_simple_model, write_model


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def identity_model(elem_type: int, shape=("batch", 3)) -> onnx.ModelProto:
    """INPUT -> OUTPUT unchanged, of one ONNX element type."""
    return _model(
        [helper.make_node("Identity", ["INPUT"], ["OUTPUT"])],
        [helper.make_tensor_value_info("INPUT", elem_type, list(shape))],
        [helper.make_tensor_value_info("OUTPUT", elem_type, list(shape))],
    )


def two_outputs_model() -> onnx.ModelProto:
    """X FP32 [batch, 2] -> SUM = X + X (FP32) and ROWS = ReduceSum over dim 1 (FP32 [batch, 1])."""
    return _model(
        [
            helper.make_node("Add", ["X", "X"], ["SUM"]),
            helper.make_node("ReduceSum", ["X", "axes"], ["ROWS"], keepdims=1),
        ],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 2])],
        [
            helper.make_tensor_value_info("SUM", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("ROWS", TensorProto.FLOAT, ["batch", 1]),
        ],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )


def fixed_batch_model() -> onnx.ModelProto:
    """X FP32 [2, 3] -> Y = Relu(X): no variable first dimension, so it cannot batch."""
    return _model(
        [helper.make_node("Relu", ["X"], ["Y"])],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3])],
    )


def reshape_model() -> onnx.ModelProto:
    """DATA FP32 [n] reshaped to SHAPE INT64 [2]: a SHAPE that does not fit DATA fails inside ONNX Runtime."""
    return _model(
        [helper.make_node("Reshape", ["DATA", "SHAPE"], ["OUT"])],
        [
            helper.make_tensor_value_info("DATA", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("SHAPE", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("OUT", TensorProto.FLOAT, ["rows", "cols"])],
    )


MODELS = {
    "simple": build_simple_model,
    "strings": lambda: identity_model(TensorProto.STRING, ("batch", 2)),
    "fp16": lambda: identity_model(TensorProto.FLOAT16),
    "bf16": lambda: identity_model(TensorProto.BFLOAT16),
    "int64": lambda: identity_model(TensorProto.INT64),
    "two_outputs": two_outputs_model,
    "fixed_batch": fixed_batch_model,
    "reshape": reshape_model,
}


def add_model(repository: Path, name: str, graph: str, config: str | None = None) -> Path:
    """Write graph MODELS[graph] as <repository>/<name>/1/model.onnx, with `config` (pbtxt) if given."""
    write_model(MODELS[graph](), repository, name)
    if config is not None:
        (repository / name / "config.pbtxt").write_text(textwrap.dedent(config))
    return repository / name


def model_bytes(graph: str) -> bytes:
    return MODELS[graph]().SerializeToString()
