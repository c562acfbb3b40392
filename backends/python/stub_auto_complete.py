"""A python model's `auto_complete_config`, run in a stub process of its own: a model file that crashes on import
fails its own load only."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import InstanceLoadError
from modelgate.backends.python.execution_env import stub_interpreter
from modelgate.backends.python.process_instance import START_TIMEOUT_S
from modelgate.backends.python.stub_handle import StubHandle, StubStartError
from modelgate.backends.python.stub_messages import AutoComplete


def auto_complete_in_stub(config: ModelConfig, model_dir: Path, version_dir: Path) -> ModelConfig:
    """The model class's auto_complete_config, run in a stub process started for it alone (under the model's
    own interpreter if it names one: its imports may exist only there)."""
    message = AutoComplete(config.name, str(model_dir), str(version_dir), config.SerializeToString())
    interpreter = stub_interpreter(config, model_dir)
    handle = StubHandle(interpreter)
    try:
        reply = handle.handshake(message, START_TIMEOUT_S)
    except StubStartError as exc:
        where = "" if interpreter is None else f" (under {interpreter.executable})"
        raise InstanceLoadError(f"{exc}{where}") from None
    handle.stop(5.0)
    return ModelConfig.FromString(reply.config)
