"""Loading a Hugging Face safetensors checkpoint (single file or sharded index) into our modules.

Checkpoint projections that our model fuses (q/k/v, gate/up) are copied into their slice
of the fused weight. Every parameter must be filled exactly once; a missing or mis-shaped
tensor is an error naming it.

FP8 checkpoints (float8_e4m3fn `...proj.weight` with `...proj.weight_scale`, per-tensor or per-channel) load
as they are into Fp8Linear modules (`checkpoint_has_fp8_weights` tells the runner to put them in first); a
per-tensor scale fills every row of its part. Static activation and KV scales (`input_scale`,
`output_scale`, `k_scale`, `v_scale`) are ignored: activations and the FP8 KV cache use dynamic scales.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm import tqdm

from modelgate.backends.llm.models.llama import DecoderForCausalLM
from modelgate.core.path_parameters import is_plain_file_name

FP8_DTYPE = torch.float8_e4m3fn  # not imported from kernels/: loading a checkpoint must not import triton

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_FUSED_PARTS = {
    "self_attn.q_proj": ("self_attn.qkv_proj", 0),
    "self_attn.k_proj": ("self_attn.qkv_proj", 1),
    "self_attn.v_proj": ("self_attn.qkv_proj", 2),
    "mlp.gate_proj": ("mlp.gate_up_proj", 0),
    "mlp.up_proj": ("mlp.gate_up_proj", 1),
}
_IGNORED = re.compile(
    r"(rotary_emb\.inv_freq|\.masked_bias|\.attn\.bias|\.input_scale|\.output_scale|\.k_scale|\.v_scale)$"
)


class WeightLoadError(ValueError):
    pass


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint: those an index lists, or every *.safetensors."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        names = set(weight_map.values())
        # The index is data inside the model folder: its shards must stay in that folder.
        outside = [name for name in names if not (isinstance(name, str) and is_plain_file_name(name))]
        if outside:
            raise WeightLoadError(f"{index.name} names shard files outside the checkpoint folder: {outside[:4]}")
        return [model_dir / name for name in sorted(names)]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise WeightLoadError(f"no *.safetensors files in {model_dir}")
    return files


def checkpoint_has_fp8_weights(model_dir: Path) -> bool:
    """True when the checkpoint carries FP8 weights with their `weight_scale` tensors."""
    return any(name.endswith(".weight_scale") for path in checkpoint_files(model_dir) for name in _tensor_names(path))


def load_weights(
    model: DecoderForCausalLM, model_dir: Path, show_progress: bool = True, checkpoint_slice=None, checkpoint_key=None
) -> None:
    """Fill every parameter of `model` from the checkpoint in `model_dir`.

    `checkpoint_slice(key, shape)` (tensor parallelism: parallel/sharding.py) names the slice of a checkpoint
    tensor this process reads (a CheckpointSlice, or None for all of it): only that slice is read from the
    file, and it fills the first `length` rows or columns of the parameter.

    `checkpoint_key(key)` (pipeline parallelism: parallel/stages.py) maps a key onto the model's name for it
    (a stage numbers its layers from 0), or to None for a tensor of another stage, which is then not read."""
    targets = _target_slices(model)
    filled: set[str] = set()
    files = checkpoint_files(model_dir)
    names = [(path, name) for path in files for name in _tensor_names(path)]
    progress = tqdm(total=len(names), desc="Loading weights", unit="tensor", disable=not show_progress)
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as checkpoint:
            for name in checkpoint.keys():
                progress.update(1)
                if _IGNORED.search(name) or (name == "lm_head.weight" and model.config.tie_word_embeddings):
                    continue
                key = _our_key(name)
                if checkpoint_key is not None and (key := checkpoint_key(key)) is None:
                    continue
                if key not in targets:
                    raise WeightLoadError(f"checkpoint tensor '{name}' ({path.name}) has no place in the model")
                piece = None if checkpoint_slice is None else _read_slice(checkpoint, name, key, checkpoint_slice)
                if piece is None:
                    _copy(checkpoint.get_tensor(name), targets[key], name)
                else:
                    tensor, part = piece
                    parameter, rows = targets[key]
                    destination = parameter.data if rows is None else parameter.data[rows]
                    _copy(tensor, (destination.narrow(part.dim, 0, part.length), None), name)
                filled.add(key)
    progress.close()
    missing = sorted(set(targets) - filled)
    if missing:
        raise WeightLoadError(f"checkpoint in {model_dir} lacks tensors for: {', '.join(missing[:8])}")


def _read_slice(checkpoint, name: str, key: str, checkpoint_slice):
    """(the slice of tensor `name` that checkpoint_slice names, the slice), read without the rest; None: all."""
    stored = checkpoint.get_slice(name)
    part = checkpoint_slice(key, tuple(stored.get_shape()))
    if part is None:
        return None
    index = (slice(None),) * part.dim + (slice(part.start, part.start + part.length),)
    return stored[index], part


def _tensor_names(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt", device="cpu") as checkpoint:
        return list(checkpoint.keys())


def _our_key(name: str) -> str:
    """A checkpoint name as `<our parameter>[#part]`."""
    if name == "lm_head.weight":
        return "lm_head_weight"
    if name.startswith("model.") and not name.startswith("model.layers."):
        return name[len("model.") :]
    match = _LAYER.match(name)
    if match is None:
        return name
    layer, rest = match.groups()
    module, _, kind = rest.rpartition(".")
    if module in _FUSED_PARTS:
        fused, part = _FUSED_PARTS[module]
        return f"layers.{layer}.{fused}.{kind}#{part}"
    return f"layers.{layer}.{rest}"


def _target_slices(model: DecoderForCausalLM) -> dict[str, tuple[torch.Tensor, slice | None]]:
    """Every checkpoint key the model expects -> (parameter, rows of it)."""
    targets: dict[str, tuple[torch.Tensor, slice | None]] = {}
    modules = dict(model.named_modules())
    for name, parameter in model.named_parameters():
        module_name, _, kind = name.rpartition(".")
        module = modules.get(module_name)
        parts = getattr(module, "part_sizes", None)
        if parts is not None and len(parts) > 1:
            for index in range(len(parts)):
                targets[f"{name}#{index}"] = (parameter, module.part_slice(index))
        else:
            targets[name] = (parameter, None)
    return targets


def _copy(tensor: torch.Tensor, target: tuple[torch.Tensor, slice | None], name: str) -> None:
    parameter, rows = target
    destination = parameter.data if rows is None else parameter.data[rows]
    if name.endswith(".weight_scale"):
        tensor = _scale_rows(tensor, destination.shape[0], name)
    if (tensor.dtype == FP8_DTYPE) != (destination.dtype == FP8_DTYPE):
        raise WeightLoadError(
            f"checkpoint tensor '{name}' is {tensor.dtype} but the model expects {destination.dtype} "
            f"(FP8 weights need their weight_scale; a mixed FP8/unquantized checkpoint is not supported)"
        )
    if tuple(destination.shape) != tuple(tensor.shape):
        raise WeightLoadError(
            f"checkpoint tensor '{name}' has shape {tuple(tensor.shape)}, the model expects {tuple(destination.shape)}"
        )
    destination.copy_(tensor.to(destination.dtype))


def _scale_rows(scale: torch.Tensor, num_rows: int, name: str) -> torch.Tensor:
    """A checkpoint weight_scale as one float32 scale per output row: per-tensor ((), [1]) or per-channel."""
    if scale.numel() == 1 and scale.dim() <= 2:
        return scale.float().reshape(1).expand(num_rows)
    if scale.numel() == num_rows and (scale.dim() == 1 or (scale.dim() == 2 and scale.shape[1] == 1)):
        return scale.float().reshape(num_rows)
    raise WeightLoadError(
        f"checkpoint tensor '{name}' has shape {tuple(scale.shape)}; weight scales must be per-tensor (() or [1]) "
        f"or per-channel ([{num_rows}] or [{num_rows}, 1]); block-wise scales are not supported"
    )
