"""What a model instance needs in memory, by the rules the server's ledger follows (server/memory/placement.py)
and `modelgate size repository` replays before anything loads; and how a refusal reads.

In order of trust, an instance needs:
1. what its config declares: model parameter `gpu_memory_bytes` (KIND_GPU) or `cpu_memory_bytes` (KIND_CPU), per
   instance, e.g. "2GiB";
2. for an LLM on a GPU without a declared size: a budget carved from what the GPU has left, as its
   `gpu_memory_utilization` (default 0.9) leaves it: free - (1 - utilization) * limit;
3. what the last load of this version measured (the server's alone: a plan has no loads to remember);
4. an estimate: the size of the version's files (a TorchScript or ONNX file is mostly its weights).

The sources are named here once so that a plan and the server's refusal say the same thing.
"""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.byte_sizes import gib, parse_bytes
from modelgate.core.errors import ConfigError

MEMORY_PARAMETERS = {"GPU": "gpu_memory_bytes", "CPU": "cpu_memory_bytes"}
LLM_BACKEND = "llm"
LLM_UTILIZATION_PARAMETER = "gpu_memory_utilization"
DEFAULT_LLM_UTILIZATION = 0.9

LLM_SHARE = "an LLM's share of what is free"
MEASURED = "measured at its last load"
ESTIMATED = "estimated from its files"


def declared_source(kind: str) -> str:
    return f"declared as {MEMORY_PARAMETERS[kind]}"


def declared_bytes(config: ModelConfig, kind: str) -> int | None:
    """Bytes per instance the config declares for instances of `kind` ("GPU"/"CPU"); None when it declares none.
    ConfigError for a value that is not a size."""
    name = MEMORY_PARAMETERS[kind]
    if name not in config.parameters:
        return None
    try:
        return parse_bytes(config.parameters[name].string_value)
    except ValueError as exc:
        raise ConfigError(f"model '{config.name}' config", f"parameters.{name}", str(exc)) from None


def takes_llm_share(config: ModelConfig, kind: str) -> bool:
    """An LLM instance on a GPU without a declared size: it takes what the others leave, so it is placed last."""
    return config.backend == LLM_BACKEND and kind == "GPU" and MEMORY_PARAMETERS["GPU"] not in config.parameters


def llm_utilization(config: ModelConfig) -> float:
    """The LLM's `gpu_memory_utilization` parameter, in (0, 1]; ConfigError otherwise."""
    if LLM_UTILIZATION_PARAMETER not in config.parameters:
        return DEFAULT_LLM_UTILIZATION
    text = config.parameters[LLM_UTILIZATION_PARAMETER].string_value
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise ConfigError(
            f"model '{config.name}' config", f"parameters.{LLM_UTILIZATION_PARAMETER}", f"'{text}' is not in (0, 1]"
        )
    return value


def llm_share_bytes(free_bytes: int, limit_bytes: int, utilization: float) -> int:
    """What an LLM gets of a GPU with `free_bytes` left under its `limit_bytes`: all but the headroom that its
    utilization keeps aside of the whole limit (never below zero)."""
    return max(int(free_bytes - (1 - utilization) * limit_bytes), 0)


def files_bytes(folder: Path) -> int:
    """The size of a version folder's files (or of a single model file): the estimate of last resort."""
    if not folder.is_dir():
        return folder.stat().st_size if folder.exists() else 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def refusal_message(
    who: str,
    device: str,
    needed: int,
    source: str,
    free: int,
    limit: int,
    held_by: dict[str, int],
    free_elsewhere: dict[str, int],
) -> str:
    """The refusal of a load that does not fit: what `who` (model, version, instance) needs on `device` and why,
    what is free there of its limit, which models hold the rest (largest first) and what other GPUs have free."""
    holders = ", ".join(f"'{m}' {gib(b)}" for m, b in sorted(held_by.items(), key=lambda item: -item[1]))
    others = ", ".join(f"{label} {gib(count)}" for label, count in free_elsewhere.items())
    return (
        f"{who} needs {gib(needed)} on {device} ({source}); {device} has {gib(max(free, 0))} free of its "
        f"{gib(limit)} limit"
        + (f"; held by {holders}" if holders else "")
        + (f"; free elsewhere: {others}" if others else "")
    )
