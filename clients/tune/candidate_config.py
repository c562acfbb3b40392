"""A candidate's ModelConfig, to serve (in a repository of its own) and to hand back (OUT/config.pbtxt).

Both are the model's own config with the candidate's overrides set in `parameters` and, when a device was
named, its instance groups moved there (cuda:N pins the GPU while tuning; the config handed back only says
KIND_GPU, and a `device` parameter gives way to the named device in both). The config to serve also leaves out
what would touch the user's files or slow the engine for nothing: trace_* parameters (candidates would append
to the model's production trace) and the load progress bar; it serves the tuned version only (no
version_policy).
"""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInstanceGroup

from modelgate.clients.tune.candidate import Candidate
from modelgate.clients.tune.model_folder import ModelFolder

_TRACE_PREFIX = "trace_"  # trace_file, trace_max_bytes, trace_backup_count


def chosen_config(model: ModelFolder, candidate: Candidate, device: str | None) -> ModelConfig:
    """The config to deploy: the model's, with the candidate's settings (and device kind)."""
    config = ModelConfig()
    config.CopyFrom(model.config)
    for name, value in candidate.overrides:
        config.parameters[name].string_value = value
    if device is not None:
        _move_instances(config, device, pin_gpu=False)
    return config


def serving_config(model: ModelFolder, candidate: Candidate, device: str | None) -> ModelConfig:
    """The config a candidate is served with while it is measured."""
    config = chosen_config(model, candidate, None)
    config.name = model.name
    config.ClearField("version_policy")
    for key in [key for key in config.parameters if key.startswith(_TRACE_PREFIX)]:
        del config.parameters[key]
    config.parameters["show_progress"].string_value = "false"
    if device is not None:
        _move_instances(config, device, pin_gpu=True)
    return config


def write_repository(root: Path, model: ModelFolder, candidate: Candidate, device: str | None) -> Path:
    """A one-model repository under `root`: the serving config, and a link to the model's version folder."""
    folder = Path(root) / model.name
    folder.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(text_format.MessageToString(serving_config(model, candidate, device)))
    os.symlink(model.version_dir, folder / model.version, target_is_directory=True)
    return Path(root)


def _move_instances(config: ModelConfig, device: str, pin_gpu: bool) -> None:
    if "device" in config.parameters:
        del config.parameters["device"]
    if not config.instance_group:
        config.instance_group.add(count=1)
    is_gpu = device.startswith("cuda")
    for group in config.instance_group:
        group.kind = ModelInstanceGroup.KIND_GPU if is_gpu else ModelInstanceGroup.KIND_CPU
        del group.gpus[:]
        if is_gpu and pin_gpu:
            group.gpus.append(int(device.partition(":")[2] or 0))
