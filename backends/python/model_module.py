"""Importing a Triton python-backend `model.py` from a version folder."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

import modelgate.backends.python.triton_python_backend_utils as pb_utils

_module_counter = itertools.count()


def make_pb_utils_importable() -> None:
    """Let models `import triton_python_backend_utils as pb_utils`, as inside Triton."""
    sys.modules.setdefault("triton_python_backend_utils", pb_utils)


def import_model_file(path: Path, model_name: str) -> ModuleType:
    """Execute `path` as a fresh module (one per instance, so module globals are per instance).

    The version folder is put on sys.path so the model can import files beside it. The file
    is compiled from its source on every call, never from `__pycache__`: Python trusts a
    cached module whose source kept its size and mtime second, so an edited model.py could
    otherwise reload as its old code.
    """
    if not path.is_file():
        raise FileNotFoundError(f"python model file '{path.name}' not found in {path.parent}")
    make_pb_utils_importable()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name = f"_modelgate_python_model_{model_name.replace('.', '_').replace('-', '_')}_{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        exec(compile(path.read_bytes(), str(path), "exec", dont_inherit=True), module.__dict__)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    if not hasattr(module, "TritonPythonModel"):
        raise AttributeError(f"{path} does not define class TritonPythonModel")
    return module
