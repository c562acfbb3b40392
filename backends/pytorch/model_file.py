"""Which file of a version folder holds the model, and in which format.

The file is the config's `default_model_filename` ("model.pt" unless set). A name ending in
`.pt2`, or the platform "torch_export", means a torch.export archive; anything else is
TorchScript. When the default "model.pt" is absent but "model.pt2" is there, that is used.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError

TORCHSCRIPT_FILENAME = "model.pt"
EXPORT_FILENAME = "model.pt2"
EXPORT_PLATFORM = "torch_export"


class ModelFormat(enum.Enum):
    TORCHSCRIPT = "TorchScript"
    EXPORTED_PROGRAM = "torch.export"


@dataclass(frozen=True)
class ModelFile:
    path: Path
    format: ModelFormat


def find_model_file(config: ModelConfig, version_dir: Path) -> ModelFile:
    """The model file of `version_dir`; ConfigError naming the field when it is missing."""
    name = config.default_model_filename or _default_name(config)
    path = version_dir / name
    if name == TORCHSCRIPT_FILENAME and not path.exists() and (version_dir / EXPORT_FILENAME).exists():
        path = version_dir / EXPORT_FILENAME
    if not path.is_file():
        raise ConfigError(
            str(version_dir),
            "default_model_filename",
            f"'{path.name}' is not a file in this version folder; put a TorchScript '{TORCHSCRIPT_FILENAME}' or "
            f"a torch.export '{EXPORT_FILENAME}' there, or name the file in default_model_filename",
        )
    is_export = path.suffix == ".pt2" or config.platform == EXPORT_PLATFORM
    return ModelFile(path, ModelFormat.EXPORTED_PROGRAM if is_export else ModelFormat.TORCHSCRIPT)


def _default_name(config: ModelConfig) -> str:
    return EXPORT_FILENAME if config.platform == EXPORT_PLATFORM else TORCHSCRIPT_FILENAME
