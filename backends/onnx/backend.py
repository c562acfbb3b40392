"""The ONNX Runtime backend: `backend: "onnxruntime"` / `platform: "onnxruntime_onnx"`.

A version folder holds `model.onnx` (or the file `default_model_filename` names; a folder
of that name holding `model.onnx` also works, for models with external data). The config
is completed from the graph (graph_config.py); each instance owns one InferenceSession on
the CPU or, for KIND_GPU, on the CUDA execution provider (session_factory.py).
"""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import Backend, InstanceSpec, ModelInstance
from modelgate.backends.onnx.graph_config import GraphConfigCompleter
from modelgate.backends.onnx.graph_signature import GraphSignature, read_signature
from modelgate.backends.onnx.session_config import session_config_from
from modelgate.core.config_files import find_config_file
from modelgate.core.errors import ConfigError

DEFAULT_MODEL_FILENAME = "model.onnx"
PLATFORM = "onnxruntime_onnx"


class OnnxBackend(Backend):
    name = "onnxruntime"

    def default_model_filename(self) -> str:
        return DEFAULT_MODEL_FILENAME

    def auto_complete_config(self, config: ModelConfig, model_dir: Path, version_dir: Path | None) -> ModelConfig:
        """Check the session parameters, then complete and check the config against the newest version's graph."""
        source = _config_source(model_dir)
        session_config_from(config, source)
        if not config.platform:
            config.platform = PLATFORM
        if version_dir is None:
            return config
        path = model_path(version_dir, config)
        label = str(path.relative_to(model_dir)) if path.is_relative_to(model_dir) else str(path)
        graph = _read_graph(path, source, label)
        return GraphConfigCompleter(graph, source, label).complete(config)

    def load_instance(self, spec: InstanceSpec) -> ModelInstance:
        from modelgate.backends.onnx.model_instance import OnnxModelInstance

        path = model_path(spec.version_dir, spec.config)
        if not path.is_file():
            raise FileNotFoundError(f"model '{spec.model_name}' version {spec.model_version} has no {path}")
        return OnnxModelInstance(spec, path, session_config_from(spec.config, _config_source(spec.model_dir)))


def model_path(version_dir: Path, config: ModelConfig) -> Path:
    """The ONNX file of a version: `<version>/<default_model_filename>`, or `model.onnx` inside it if a folder."""
    path = version_dir / (config.default_model_filename or DEFAULT_MODEL_FILENAME)
    return path / DEFAULT_MODEL_FILENAME if path.is_dir() else path


def _read_graph(path: Path, source: str, label: str) -> GraphSignature:
    if not path.is_file():
        raise ConfigError(
            source,
            "default_model_filename",
            f"{label} does not exist; an ONNX model is <version>/model.onnx or the file default_model_filename names",
        )
    try:
        return read_signature(path)
    except Exception as exc:  # a corrupt or unsupported file: ONNX Runtime's message says which
        raise ConfigError(source, "<model file>", f"ONNX Runtime cannot load {label}: {exc}") from None


def _config_source(model_dir: Path) -> str:
    """How errors name the config: its file, or the model folder when the config was completed from nothing."""
    path = find_config_file(model_dir)
    return str(path) if path is not None else f"{model_dir} (no config file)"
