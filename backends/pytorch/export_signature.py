"""The tensors a torch.export program takes and returns: names, dtypes and shapes.

Inputs are the program's user inputs, named after forward()'s arguments. Outputs are named
as the backend looks them up: a dict's keys, else `OUTPUT__<i>` for the i-th tensor of a
tuple/list (or `OUTPUT__0` for a single tensor). Dimensions the program keeps symbolic
(exported with `torch.export.Dim`) are None.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TensorSignature:
    name: str
    dtype: torch.dtype
    shape: tuple[int | None, ...]  # None: a dynamic dimension
    max_dim0: int | None = None  # the upper bound of a dynamic first dimension, when bounded


@dataclass(frozen=True)
class ProgramSignature:
    inputs: list[TensorSignature]
    outputs: list[TensorSignature]
    outputs_are_named: bool  # the program returns a dict

    @property
    def has_batch_dimension(self) -> bool:
        """Whether every input and output has a dynamic first dimension (Triton's batch dimension)."""
        tensors = self.inputs + self.outputs
        return bool(self.inputs) and all(t.shape and t.shape[0] is None for t in tensors)


def program_signature(program: torch.export.ExportedProgram) -> ProgramSignature:
    """The signature of `program`; raises ValueError for nested or non-tensor inputs/outputs."""
    bounds = {str(symbol): _upper_bound(value_range) for symbol, value_range in program.range_constraints.items()}
    nodes = {node.name: node for node in program.graph.nodes}
    user_inputs = list(program.graph_signature.user_inputs)
    names = _input_names(program, user_inputs)
    inputs = [_tensor(name, nodes[node].meta.get("val"), bounds) for name, node in zip(names, user_inputs)]
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    values = [_node_value(node) for node in _output_nodes(output_node)]
    out_spec = program.call_spec.out_spec
    output_names, named = _output_names(out_spec, len(values))
    outputs = [_tensor(name, value, bounds) for name, value in zip(output_names, values)]
    return ProgramSignature(inputs, outputs, named)


def _input_names(program: torch.export.ExportedProgram, user_inputs: list[str]) -> list[str]:
    in_spec = program.call_spec.in_spec
    args_spec, kwargs_spec = _children(in_spec) if in_spec is not None else (None, None)
    if args_spec is None or kwargs_spec.num_children or any(not c.is_leaf() for c in _children(args_spec)):
        raise ValueError("only programs whose forward() takes plain tensors as positional arguments are supported")
    arg_names = list(program.module_call_graph[0].signature.forward_arg_names or [])
    return arg_names if len(arg_names) == len(user_inputs) else user_inputs


def _output_names(out_spec, count: int) -> tuple[list[str], bool]:
    if out_spec is None or out_spec.is_leaf():
        return ["OUTPUT__0"], False
    children = _children(out_spec)
    if any(not child.is_leaf() for child in children) or len(children) != count:
        raise ValueError("only programs returning a tensor, a flat tuple/list or a flat dict of tensors are supported")
    if out_spec.type is dict:
        return [str(key) for key in out_spec.context], True
    return [f"OUTPUT__{i}" for i in range(count)], False


def _output_nodes(output_node) -> list:
    returned = output_node.args[0]
    return list(returned) if isinstance(returned, (list, tuple)) else [returned]


def _node_value(node):
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else node


def _tensor(name: str, value, bounds: dict[str, int | None]) -> TensorSignature:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"'{name}' is a {type(value).__name__}, not a tensor")
    shape = tuple(d if isinstance(d, int) else None for d in value.shape)
    max_dim0 = bounds.get(str(value.shape[0])) if shape and shape[0] is None else None
    return TensorSignature(name, value.dtype, shape, max_dim0)


def _upper_bound(value_range) -> int | None:
    upper = value_range.upper
    return int(upper) if getattr(upper, "is_Integer", False) else None  # int_oo (unbounded) is not an Integer


def _children(spec) -> list:
    """A TreeSpec's child specs, across torch versions."""
    children = getattr(spec, "children", None)
    return list(children()) if callable(children) else list(spec.children_specs)
