"""Checks of `model_warmup` in a completed config: each error names the sample's field and what is allowed.

As Triton: a sample's `inputs` give every required input of the model (by name, with its data type and its
dims without the batch dimension) and how its data is made (`zero_data`, `random_data` or `input_data_file`);
`batch_size` is at least 1 and at most `max_batch_size` (exactly 1 for a model that does not batch); an
ensemble has no warm-up (its composing models warm up themselves). The files are read at load (samples.py).
"""

from __future__ import annotations

from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelWarmup

from modelgate.core.errors import ConfigError
from modelgate.core.path_parameters import is_plain_relative_path
from modelgate.server.scheduling.ensemble.graph import is_ensemble

DATA_CHOICES = "zero_data, random_data or input_data_file"


def check_warmup_fields(config: ModelConfig, source: str) -> None:
    """Raise ConfigError for the first problem in `config.model_warmup`."""
    if not config.model_warmup:
        return
    if is_ensemble(config):
        raise ConfigError(source, "model_warmup", "is not allowed for an ensemble; warm up its composing models")
    for index, sample in enumerate(config.model_warmup):
        _check_sample(config, sample, f"model_warmup[{index}]", source)


def _check_sample(config: ModelConfig, sample: ModelWarmup, where: str, source: str) -> None:
    if not sample.name:
        raise ConfigError(source, f"{where}.name", "is required: the name load errors give the sample")
    most = config.max_batch_size if config.max_batch_size > 0 else 1
    if not 1 <= sample.batch_size <= most:
        what = (
            f"max_batch_size {config.max_batch_size}" if config.max_batch_size > 0 else "1 (the model does not batch)"
        )
        raise ConfigError(source, f"{where}.batch_size", f"is {sample.batch_size}; allowed: 1 to {what}")
    declared = {tensor.name: tensor for tensor in config.input}
    for name, value in sample.inputs.items():
        _check_input(declared.get(name), value, f"{where}.inputs[{name}]", source, sorted(declared))
    missing = [name for name, tensor in declared.items() if not tensor.optional and name not in sample.inputs]
    if missing:
        raise ConfigError(source, f"{where}.inputs", f"lacks the model's required input(s) {missing}")


def _check_input(declared, value: ModelWarmup.Input, where: str, source: str, names: list[str]) -> None:
    if declared is None:
        raise ConfigError(source, where, f"is not an input of the model; its inputs: {names}")
    if value.data_type != declared.data_type:
        expected, given = DataType.Name(declared.data_type), DataType.Name(value.data_type)
        raise ConfigError(source, f"{where}.data_type", f"is {given}; the input is {expected}")
    dims, expected = list(value.dims), list(declared.dims)
    fits = len(dims) == len(expected) and all(d > 0 and e in (-1, d) for d, e in zip(dims, expected))
    if not fits:
        raise ConfigError(
            source, f"{where}.dims", f"is {dims}; must match the input's dims {expected} with every size given (> 0)"
        )
    choice = value.WhichOneof("input_data_type")
    if choice is None:
        raise ConfigError(source, where, f"needs one of {DATA_CHOICES}")
    if choice == "input_data_file" and not is_plain_relative_path(value.input_data_file):
        raise ConfigError(
            source,
            f"{where}.input_data_file",
            f"is '{value.input_data_file}'; it must be a relative path inside the warmup/ folder (no '..')",
        )
