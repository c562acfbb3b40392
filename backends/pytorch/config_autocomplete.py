"""Completing a PyTorch model's config from its model file.

TorchScript carries no tensor types or shapes, so a `model.pt` needs its inputs and outputs
declared (a ConfigError names the missing field). A torch.export `model.pt2` knows them: when
the config declares no inputs (or no outputs), they are filled from the program's signature,
named as the backend maps them (forward()'s argument names; a returned dict's keys, else
`OUTPUT__<i>`).

Batching: when the config declares neither inputs nor max_batch_size and every input and
output of the program has a dynamic first dimension, that dimension becomes Triton's batch
dimension and max_batch_size is set to Triton's default for auto-completed models, 4 (or the
dimension's exported upper bound, if lower), with the dynamic batcher enabled when no other
scheduler is configured, as Triton does. Otherwise the full shapes are used (max_batch_size 0),
dynamic dimensions as -1.
"""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig

from modelgate.backends.pytorch.export_signature import ProgramSignature, TensorSignature
from modelgate.backends.pytorch.loaded_module import load_program_signature
from modelgate.backends.pytorch.model_file import ModelFormat, find_model_file
from modelgate.backends.pytorch.tensor_dtypes import config_name
from modelgate.core.config_files import find_config_file
from modelgate.core.errors import ConfigError

DEFAULT_MAX_BATCH_SIZE = 4  # Triton's --backend-config=default-max-batch-size default


def complete_pytorch_config(config: ModelConfig, model_dir: Path, version_dir: Path | None) -> ModelConfig:
    """`config` completed in place from `version_dir`'s model file; ConfigError naming what is missing."""
    if version_dir is None:
        return config
    source = str(find_config_file(model_dir) or model_dir)
    model_file = find_model_file(config, version_dir)
    if not config.default_model_filename:
        config.default_model_filename = model_file.path.name
    if model_file.format is ModelFormat.TORCHSCRIPT:
        _require_tensors(config, source)
        return config
    try:
        signature = load_program_signature(model_file)
    except ValueError as exc:
        raise ConfigError(source, "<model file>", f"{model_file.path.name}: {exc}") from None
    _complete_from_program(config, signature, source)
    return config


def _require_tensors(config: ModelConfig, source: str) -> None:
    for kind, tensors, example in (("input", config.input, "INPUT__0"), ("output", config.output, "OUTPUT__0")):
        if not tensors:
            raise ConfigError(
                source,
                kind,
                f"is required for a TorchScript model (model.pt carries no tensor types or shapes); e.g. "
                f'{kind} [ {{ name: "{example}" data_type: TYPE_FP32 dims: [ 4 ] }} ]',
            )


def _complete_from_program(config: ModelConfig, signature: ProgramSignature, source: str) -> None:
    if not config.input and config.max_batch_size == 0 and signature.has_batch_dimension:
        bounds = [t.max_dim0 for t in signature.inputs + signature.outputs if t.max_dim0 is not None]
        config.max_batch_size = min([DEFAULT_MAX_BATCH_SIZE] + bounds)
        if config.max_batch_size > 1 and config.WhichOneof("scheduling_choice") is None:
            config.dynamic_batching.SetInParent()
    has_batch = config.max_batch_size > 0
    if not config.input:
        for tensor in signature.inputs:
            _fill(config.input.add(), tensor, has_batch, source)
    if not config.output:
        for tensor in signature.outputs:
            _fill(config.output.add(), tensor, has_batch, source)


def _fill(entry, tensor: TensorSignature, has_batch: bool, source: str) -> None:
    type_name = config_name(tensor.dtype)
    if type_name is None:
        raise ConfigError(
            source, tensor.name, f"the exported program uses {tensor.dtype}, which Triton has no type for"
        )
    shape = tensor.shape[1:] if has_batch else tensor.shape
    entry.name = tensor.name
    entry.data_type = DataType.Value(type_name)
    if has_batch and not shape:
        # A [batch] tensor: Triton shows it as dims [1] with `reshape: { shape: [] }`.
        entry.dims.append(1)
        entry.reshape.SetInParent()
        return
    entry.dims.extend(-1 if d is None else d for d in shape)
