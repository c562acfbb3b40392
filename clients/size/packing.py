"""Packing a repository's instances onto GPUs by the server's rules, before anything loads.

The order is the server's: models by name, except that an LLM without a declared size is placed after all the
others (it takes what they leave; server/memory/placement.py `sized_last`). Each instance needs what
modelgate/core/memory_rules.py says (declared, an LLM's share, or its files' size); a KIND_GPU instance without
`gpus` goes to the GPU with the most free memory (the lowest number on a tie), instance by instance. A version
that does not fit is refused whole, in the server's words, and holds nothing; the others are placed on.
CPU instances are listed, not accounted: the server accounts the host only under `--cpu-memory-limit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelgate.clients.size.gpu_models import PlannedGpu
from modelgate.clients.size.repository_models import ModelVersion, WantedInstance
from modelgate.core.byte_sizes import parse_limit
from modelgate.core.errors import ConfigError
from modelgate.core.memory_rules import (
    ESTIMATED,
    LLM_BACKEND,
    LLM_SHARE,
    declared_bytes,
    declared_source,
    files_bytes,
    llm_share_bytes,
    llm_utilization,
    refusal_message,
    takes_llm_share,
)


@dataclass(frozen=True)
class Placement:
    model: str
    version: int
    instance: str
    kind: str  # "GPU" or "CPU"
    device: str  # "GPU 0" ... or "CPU"
    bytes: int  # what the instance holds there
    source: str  # where the figure comes from, in the server's words


@dataclass
class GpuRoom:
    gpu: PlannedGpu
    limit: int
    placements: list[Placement] = field(default_factory=list)

    @property
    def held(self) -> int:
        return sum(p.bytes for p in self.placements)

    @property
    def free(self) -> int:
        return self.limit - self.held

    def held_by(self) -> dict[str, int]:
        models: dict[str, int] = {}
        for placement in self.placements:
            models[placement.model] = models.get(placement.model, 0) + placement.bytes
        return models


@dataclass(frozen=True)
class Refusal:
    model: str
    version: int | None
    message: str


@dataclass
class Packing:
    rooms: list[GpuRoom]
    placements: list[Placement] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    def placements_of(self, model: str, version: int) -> list[Placement]:
        return [p for p in self.placements if p.model == model and p.version == version]


class _DoesNotFit(Exception):
    pass


def gpu_limits(gpus: list[PlannedGpu], gpu_memory_limit: str | None) -> list[GpuRoom]:
    """Each GPU's room under `--gpu-memory-limit` (bytes or a fraction of each GPU; its size without one)."""
    return [
        GpuRoom(g, g.total_bytes if gpu_memory_limit is None else parse_limit(gpu_memory_limit, g.total_bytes))
        for g in gpus
    ]


def pack(models: list[ModelVersion], rooms: list[GpuRoom]) -> Packing:
    """Place every served version's instances; a version that cannot be placed becomes a Refusal."""
    packing = Packing(rooms)
    for model in load_order(models):
        if model.error is not None:
            packing.refusals.append(Refusal(model.name, model.version, f"model '{model.name}': {model.error}"))
            continue
        try:
            packing.placements.extend(_place_version(model, rooms))
        except _DoesNotFit as refusal:
            packing.refusals.append(Refusal(model.name, model.version, str(refusal)))
        except ConfigError as exc:
            packing.refusals.append(Refusal(model.name, model.version, exc.message))
    return packing


def load_order(models: list[ModelVersion]) -> list[ModelVersion]:
    """The order the server loads them in: as given (by name), the LLMs that take what is left after the others."""
    return sorted(models, key=_placed_last)


def _placed_last(model: ModelVersion) -> bool:
    return model.config is not None and any(takes_llm_share(model.config, i.kind) for i in model.instances)


def _place_version(model: ModelVersion, rooms: list[GpuRoom]) -> list[Placement]:
    placed: list[tuple[GpuRoom | None, Placement]] = []
    try:
        for wanted in model.instances:
            room = _room_for(model, wanted, rooms)
            placement = _placement(model, wanted, room)
            if room is not None:
                if placement.bytes > room.free:
                    raise _DoesNotFit(_refusal(model, wanted, room, placement, rooms))
                room.placements.append(placement)
            placed.append((room, placement))
    except Exception:
        for room, placement in placed:  # as the server's ledger: a refused version keeps nothing reserved
            if room is not None:
                room.placements.remove(placement)
        raise
    return [placement for _, placement in placed]


def _room_for(model: ModelVersion, wanted: WantedInstance, rooms: list[GpuRoom]) -> GpuRoom | None:
    if wanted.kind == "CPU":
        return None
    if wanted.gpu is None:
        return max(rooms, key=lambda room: (room.free, -room.gpu.id))
    room = next((room for room in rooms if room.gpu.id == wanted.gpu), None)
    if room is None:
        raise _DoesNotFit(
            f"{_who(model, wanted)} is placed on GPU {wanted.gpu} (instance_group.gpus), which this plan lacks: "
            f"it has {', '.join(r.gpu.label for r in rooms)}"
        )
    return room


def _placement(model: ModelVersion, wanted: WantedInstance, room: GpuRoom | None) -> Placement:
    declared = declared_bytes(model.config, wanted.kind)
    if declared is not None:
        count, source = declared, declared_source(wanted.kind)
    elif model.backend == LLM_BACKEND and room is not None:
        count, source = llm_share_bytes(room.free, room.limit, llm_utilization(model.config)), LLM_SHARE
    else:
        count, source = files_bytes(model.version_dir), ESTIMATED
    device = room.gpu.label if room is not None else "CPU"
    return Placement(model.name, model.version, wanted.name, wanted.kind, device, count, source)


def _refusal(model: ModelVersion, wanted: WantedInstance, room: GpuRoom, placement: Placement, rooms) -> str:
    elsewhere = {other.gpu.label: other.free for other in rooms if other is not room}
    return refusal_message(
        _who(model, wanted),
        room.gpu.label,
        placement.bytes,
        placement.source,
        room.free,
        room.limit,
        room.held_by(),
        elsewhere,
    )


def _who(model: ModelVersion, wanted: WantedInstance) -> str:
    return f"model '{model.name}' version {model.version} ({wanted.name})"
