"""A model's inputs and outputs as its ONNX graph declares them.

Read through ONNX Runtime itself (a CPU session without graph optimizations), so that what
auto-complete sees is exactly what the serving session will accept. Symbolic and unknown
dimensions are -1, as in a ModelConfig.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelgate.backends.onnx.onnx_types import config_type_of

VARIABLE = -1


@dataclass(frozen=True)
class TensorSignature:
    name: str
    ort_type: str  # as ONNX Runtime names it: "tensor(float)"
    config_type: str | None  # "TYPE_FP32"; None when no ModelConfig type carries it (sequences, maps)
    dims: tuple[int, ...] | None  # full shape, -1 for symbolic/unknown; None when even the rank is unknown

    @property
    def has_variable_first_dim(self) -> bool:
        return bool(self.dims) and self.dims[0] == VARIABLE


@dataclass(frozen=True)
class GraphSignature:
    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]

    def can_batch(self) -> bool:
        """Whether every input and output has a variable first dimension (the batch)."""
        tensors = self.inputs + self.outputs
        return bool(tensors) and all(t.has_variable_first_dim for t in tensors)


def signature_of_session(session) -> GraphSignature:
    """The signature of an `onnxruntime.InferenceSession` (its required inputs and its outputs)."""
    return GraphSignature(
        tuple(_tensor(arg) for arg in session.get_inputs()),
        tuple(_tensor(arg) for arg in session.get_outputs()),
    )


def read_signature(model_path: Path) -> GraphSignature:
    """Load `model_path` on the CPU just to read its signature; raises what ONNX Runtime raised."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # shape-merge warnings are not the user's concern here
    session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    return signature_of_session(session)


def _tensor(arg) -> TensorSignature:
    shape = arg.shape
    dims = None if shape is None else tuple(d if isinstance(d, int) and d >= 0 else VARIABLE for d in shape)
    return TensorSignature(arg.name, arg.type, config_type_of(arg.type), dims)
