"""The PyTorch backend (`backend: "pytorch"`, `platform: "pytorch_libtorch"` or `"torch_export"`).

A version folder holds a TorchScript `model.pt` (torch.jit.save) or a torch.export archive
`model.pt2` (torch.export.save). Each instance loads its own copy on its device: `cpu` for
KIND_CPU, `cuda:<device_id>` for KIND_GPU, where it runs on a CUDA stream of its own.
Inputs map to forward()'s arguments by Triton's rule (input_binding.py), outputs from what
forward() returns (output_binding.py); dynamic batches run as one call (request_batch.py).
"""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import Backend, InstanceSpec, ModelInstance
from modelgate.backends.pytorch.config_autocomplete import complete_pytorch_config
from modelgate.backends.pytorch.instance import PyTorchInstance
from modelgate.backends.pytorch.model_file import TORCHSCRIPT_FILENAME


class PyTorchBackend(Backend):
    name = "pytorch"

    def default_model_filename(self) -> str:
        return TORCHSCRIPT_FILENAME

    def auto_complete_config(self, config: ModelConfig, model_dir: Path, version_dir: Path | None) -> ModelConfig:
        """Inputs, outputs and max_batch_size from a torch.export program; see config_autocomplete.py."""
        return complete_pytorch_config(config, model_dir, version_dir)

    def load_instance(self, spec: InstanceSpec) -> ModelInstance:
        return PyTorchInstance(spec)
