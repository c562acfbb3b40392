"""Naming what forward() returned with the configured outputs.

- a dict of tensors: by key;
- a tensor, or a tuple/list of tensors: if every output name follows `<name>__<index>`
  (`OUTPUT__0`...), output `__i` is element i; otherwise the outputs take the elements in
  the order the config declares them. A lone tensor is element 0.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ModelExecutionError

_INDEXED_NAME = re.compile(r"^.+__(\d+)$")


class OutputBinding:
    def __init__(self, config: ModelConfig):
        self.names = [tensor.name for tensor in config.output]
        matches = [_INDEXED_NAME.match(name) for name in self.names]
        if self.names and all(matches):
            self.position_of = {name: int(m.group(1)) for name, m in zip(self.names, matches)}
        else:
            self.position_of = {name: i for i, name in enumerate(self.names)}

    def select(self, result: Any, wanted: list[str]) -> dict[str, torch.Tensor]:
        """{name: tensor} for each of `wanted`; ModelExecutionError if the result lacks one."""
        if isinstance(result, dict):
            found = {name: result.get(name) for name in wanted}
            available = f"the returned dict has keys {sorted(map(str, result))}"
        else:
            elements = list(result) if isinstance(result, (tuple, list)) else [result]
            found = {name: _element(elements, self.position_of[name]) for name in wanted}
            available = f"forward() returned {len(elements)} value(s)"
        for name, value in found.items():
            if not isinstance(value, torch.Tensor):
                what = "nothing" if value is None else f"a {type(value).__name__}"
                raise ModelExecutionError(
                    f"output '{name}' has no tensor in what forward() returned ({what}); {available}"
                )
        return found


def _element(elements: list, position: int):
    return elements[position] if position < len(elements) else None
