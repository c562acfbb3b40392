"""The LLM model folder being tuned: its config, the version folder served, and what the engine will take.

The folder is only read: candidates are served from repositories of their own that link to its version folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.clients.tune.candidate import model_settings
from modelgate.clients.tune.tune_errors import TuneInputError
from modelgate.core.config_files import find_config_file, read_config_file
from modelgate.core.errors import ModelgateError

DERIVED_MIN_BATCHED_TOKENS = 2048  # the engine's max_num_batched_tokens when the config leaves it out: at least this


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    name: str  # the folder's name, which is the model's name in a repository
    config: ModelConfig
    config_file: Path
    version: str
    version_dir: Path

    @property
    def parameters(self) -> dict[str, str]:
        return {key: value.string_value for key, value in self.config.parameters.items()}

    @property
    def settings(self) -> dict[str, str]:
        """The effective tunable engine settings of the config as it is, with the two the engine derives at load
        (max_model_len from the checkpoint, max_num_batched_tokens = max(2048, max_model_len)) where it left them
        out: a candidate that sets them to those values is the model's own config, not another candidate."""
        settings = model_settings(self.parameters)
        max_model_len = self.max_model_len()
        if max_model_len is not None:
            settings.setdefault("max_model_len", str(max_model_len))
            settings.setdefault("max_num_batched_tokens", str(max(DERIVED_MIN_BATCHED_TOKENS, max_model_len)))
        return settings

    @property
    def tokenizer(self) -> Path | None:
        return self.version_dir if (self.version_dir / "tokenizer.json").is_file() else None

    def max_model_len(self) -> int | None:
        """The context the engine will serve: the config's max_model_len within the checkpoint's
        max_position_embeddings (either alone where the other is unknown); None when neither is known."""
        text = self.parameters.get("max_model_len", "").strip()
        limits = [int(text)] if text.isdigit() else []
        try:
            checkpoint = json.loads((self.version_dir / "config.json").read_text())
            limits.append(int(checkpoint["max_position_embeddings"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return min(limits, default=None)


def read_model_folder(path: Path, version: str | None = None) -> ModelFolder:
    """The model folder at `path`, serving `version` (default: its highest numbered version folder)."""
    path = Path(path)
    if not path.is_dir():
        raise TuneInputError(f"model folder {path} does not exist (expected a folder with config.pbtxt and 1/)")
    config_file = find_config_file(path)
    if config_file is None:
        raise TuneInputError(f"model folder {path} has no config.pbtxt (nor config.yaml / config.json)")
    try:
        config = read_config_file(config_file)
    except ModelgateError as exc:
        raise TuneInputError(str(exc)) from None
    if config.backend != "llm":
        raise TuneInputError(f"{config_file}: backend is '{config.backend}'; tune serves LLM models (backend: \"llm\")")
    version = version or _latest_version(path)
    version_dir = path / version
    if not version_dir.is_dir():
        raise TuneInputError(f"model folder {path} has no version folder '{version}'")
    return ModelFolder(path.resolve(), path.resolve().name, config, config_file, version, version_dir.resolve())


def _latest_version(path: Path) -> str:
    versions = [child.name for child in path.iterdir() if child.is_dir() and child.name.isdigit()]
    if not versions:
        raise TuneInputError(f"model folder {path} has no version folder (a numbered folder such as 1/)")
    return max(versions, key=int)
