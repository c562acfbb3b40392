"""Write model_repository/simple_torchscript/1/model.pt: a scripted Linear(4, 4) + ReLU.

The weights come from a fixed seed, so running this again writes a model with the same weights. Usage:

    python clients/examples/make_torchscript_example.py [--repository model_repository]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

SEED = 0
WIDTH = 4


class LinearRelu(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, 4] -> [batch, 4]
        return torch.relu(self.linear(x))


def make_module() -> torch.jit.ScriptModule:
    torch.manual_seed(SEED)
    module = LinearRelu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+ deprecates TorchScript; Triton serves it
        return torch.jit.script(module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "model_repository"
    parser.add_argument("--repository", type=Path, default=default)
    args = parser.parse_args()
    path = args.repository / "simple_torchscript" / "1" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    make_module().save(str(path))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
