"""Small torch modules for the PyTorch backend tests, and writers of their model folders."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import torch
from torch import nn

import tests.backends.pytorch.custom_ops  # noqa: F401  (registers torch.ops.mgtest before scripting)


class AddSub(nn.Module):
    """Two inputs, a tuple of two outputs: Triton's INPUT__i / OUTPUT__i naming."""

    def forward(self, a, b):
        return a + b, a - b


class ScaleAndTotal(nn.Module):
    """Inputs bound by forward()'s argument names, outputs in a dict."""

    def forward(self, x, scale):
        return {"scaled": x * scale, "total": x.sum(dim=1, keepdim=True)}


class MixedTypes(nn.Module):
    """FP16, BF16 and INT64 in and out; `widened` is FP16 that the config declares FP32."""

    def forward(self, half, brain, count):
        return {"half": half * 2, "brain": brain * 2 + 1, "count": count * 3 - 1, "widened": half + 1}


class Raiser(nn.Module):
    def forward(self, x):
        if bool((x < 0).any()):
            raise ValueError("negative input")
        return x + 1


class FloatSixtyFour(nn.Module):
    """Returns FP64 where the config declares FP32: a lossy cast the backend refuses."""

    def forward(self, x):
        return x.double() / 3


class Gated(nn.Module):
    """Waits at custom_ops.GATE; returns 2x and, per row, how many rows its forward() call had."""

    def forward(self, x):
        y = torch.ops.mgtest.gate(x)
        rows = torch.full((x.shape[0], 1), x.shape[0], dtype=torch.int64)
        return y * 2, rows


class Paired(nn.Module):
    """Returns only once two calls are inside forward() at the same time (custom_ops.RENDEZVOUS)."""

    def forward(self, x):
        return torch.ops.mgtest.rendezvous(x) + 1


class OnDevice(nn.Module):
    """2x, and per row the CUDA device index forward() ran on (-1 on the CPU)."""

    def forward(self, x):
        return x * 2, torch.full((x.shape[0], 1), x.get_device(), dtype=torch.int64)


class TokenWeights(nn.Module):
    """For torch.export with a dynamic batch dimension: named inputs of two types, a dict out."""

    def forward(self, tokens, weight):
        return {"weighted": weight * tokens, "count": (tokens > 0).sum(1)}


class DoubleAndSum(nn.Module):
    def forward(self, x):
        return x * 2, x.sum(1, keepdim=True)


def write_torchscript(repository: Path, name: str, module: nn.Module, config: str | None) -> torch.jit.ScriptModule:
    """Script `module` into <name>/1/model.pt with `config` (None: no tensors declared); returns it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+ deprecates TorchScript
        scripted = torch.jit.script(module.eval())
    scripted.save(str(_version_dir(repository, name) / "model.pt"))
    _write_config(repository, name, config if config is not None else f'name: "{name}" platform: "pytorch_libtorch"')
    return scripted


def write_exported(
    repository: Path, name: str, module: nn.Module, example: tuple, dynamic_shapes, config: str
) -> torch.export.ExportedProgram:
    """torch.export `module` into <name>/1/model.pt2 with `config`; returns the program."""
    program = torch.export.export(module.eval(), example, dynamic_shapes=dynamic_shapes)
    torch.export.save(program, str(_version_dir(repository, name) / "model.pt2"))
    _write_config(repository, name, config)
    return program


def _version_dir(repository: Path, name: str) -> Path:
    path = repository / name / "1"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_config(repository: Path, name: str, config: str) -> None:
    (repository / name / "config.pbtxt").write_text(textwrap.dedent(config))
