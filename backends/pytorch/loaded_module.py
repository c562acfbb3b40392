"""A model file loaded onto a device, with the arguments its forward() takes.

TorchScript modules are called with keyword arguments (so an argument with a default may be
left out); torch.export programs only take their user inputs positionally, all of them.

`torch.export.load` keeps its deserializer in a global, so two models loading at once (the
server loads models and instances in parallel threads) must take turns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from modelgate.backends.pytorch.export_signature import ProgramSignature, program_signature
from modelgate.backends.pytorch.model_file import ModelFile, ModelFormat

_EXPORT_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModuleArgument:
    name: str
    has_default: bool
    dtype: torch.dtype | None = None  # known for torch.export programs only


@dataclass
class LoadedModule:
    """Call `run(arguments)` with {argument name: tensor on the module's device}."""

    format: ModelFormat
    arguments: list[ModuleArgument]
    _call: Callable[..., Any]
    _positional: bool

    def run(self, arguments: dict[str, torch.Tensor]) -> Any:
        if not self._positional:
            return self._call(**arguments)
        missing = [a.name for a in self.arguments if a.name not in arguments]
        if missing:
            raise TypeError(f"the exported program needs argument(s) {missing}; a torch.export program has no defaults")
        return self._call(*(arguments[a.name] for a in self.arguments))


def load_module(model_file: ModelFile, device: torch.device) -> LoadedModule:
    if model_file.format is ModelFormat.EXPORTED_PROGRAM:
        return _load_exported(model_file, device)
    return _load_torchscript(model_file, device)


def _load_torchscript(model_file: ModelFile, device: torch.device) -> LoadedModule:
    module = torch.jit.load(str(model_file.path), map_location=device)
    module.eval()
    schema_arguments = module.forward.schema.arguments[1:]  # [0] is self
    arguments = [ModuleArgument(a.name, a.has_default_value()) for a in schema_arguments]
    return LoadedModule(ModelFormat.TORCHSCRIPT, arguments, module, _positional=False)


def _load_exported(model_file: ModelFile, device: torch.device) -> LoadedModule:
    program = _read_program(model_file)
    signature = program_signature(program)
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    arguments = [ModuleArgument(t.name, False, t.dtype) for t in signature.inputs]
    return LoadedModule(ModelFormat.EXPORTED_PROGRAM, arguments, program.module(), _positional=True)


def load_program_signature(model_file: ModelFile) -> ProgramSignature:
    """The signature of a torch.export archive, read on the CPU (for auto-completion)."""
    return program_signature(_read_program(model_file))


def _read_program(model_file: ModelFile) -> torch.export.ExportedProgram:
    with _EXPORT_LOAD_LOCK:
        return torch.export.load(str(model_file.path))
