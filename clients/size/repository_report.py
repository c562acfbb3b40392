"""`modelgate size repository` as text (tables) and as JSON: the models and where they go, each GPU's room, and
what each LLM's KV cache gets."""

from __future__ import annotations

from dataclasses import asdict

from modelgate.clients.size.llm_fit import LlmFit
from modelgate.clients.size.packing import Packing, Placement
from modelgate.clients.size.repository_plan import RepositoryPlan
from modelgate.core.byte_sizes import gib


def render_text(plan: RepositoryPlan) -> str:
    sections = [_models_table(plan), _devices_table(plan.packing)]
    sections.extend(_llm_lines(fit, plan) for fit in plan.llms)
    if plan.problems:
        sections.append("\n".join(["does not fit:", *(f"  {problem}" for problem in plan.problems)]))
    return "\n\n".join(sections)


def render_json(plan: RepositoryPlan) -> dict:
    return {
        "fits": not plan.problems,
        "isl": plan.isl,
        "osl": plan.osl,
        "gpus": [
            {"id": room.gpu.id, "name": room.gpu.name, "total_bytes": room.gpu.total_bytes, "limit_bytes": room.limit}
            | {"held_bytes": room.held, "free_bytes": room.free}
            for room in plan.packing.rooms
        ],
        "instances": [asdict(p) for p in plan.packing.placements],
        "llms": [asdict(fit) | {"concurrent_sequences": fit.concurrent_sequences} for fit in plan.llms],
        "problems": plan.problems,
    }


def _models_table(plan: RepositoryPlan) -> str:
    rows = [("model", "version", "backend", "kind", "instances", "bytes/instance", "source", "placed on")]
    refused = {(r.model, r.version) for r in plan.packing.refusals}
    for model in plan.models:
        placements = [] if model.version is None else plan.packing.placements_of(model.name, model.version)
        version = "-" if model.version is None else str(model.version)
        if (model.name, model.version) in refused or not placements:
            kinds = ",".join(sorted({i.kind for i in model.instances})) or "-"
            where = "refused (below)" if (model.name, model.version) in refused else "no instances"
            rows.append((model.name, version, model.backend or "-", kinds, str(len(model.instances)), "-", "-", where))
            continue
        for group in _groups(placements):
            first = group[0]
            devices = _devices(group)
            rows.append(
                (
                    model.name,
                    version,
                    model.backend,
                    first.kind,
                    str(len(group)),
                    _size(first.bytes),
                    first.source,
                    devices,
                )
            )
    return _table(rows)


def _groups(placements: list[Placement]) -> list[list[Placement]]:
    """Instances of one version that hold the same on the same kind of device, in order."""
    groups: dict[tuple, list[Placement]] = {}
    for placement in placements:
        groups.setdefault((placement.kind, placement.bytes, placement.source), []).append(placement)
    return list(groups.values())


def _devices(group: list[Placement]) -> str:
    counts: dict[str, int] = {}
    for placement in group:
        counts[placement.device] = counts.get(placement.device, 0) + 1
    return ", ".join(device if n == 1 else f"{device} x{n}" for device, n in counts.items())


def _devices_table(packing: Packing) -> str:
    rows = [("device", "card", "limit", "held", "free")]
    for room in packing.rooms:
        rows.append((room.gpu.label, room.gpu.name, gib(room.limit), gib(room.held), gib(room.free)))
    host = sum(p.bytes for p in packing.placements if p.kind == "CPU")
    if host:
        rows.append(("CPU", "host", "-", _size(host), "- (the server accounts the host under --cpu-memory-limit)"))
    return _table(rows)


def _llm_lines(fit: LlmFit, plan: RepositoryPlan) -> str:
    p = fit.placement
    overhead = f" and {gib(plan.overhead_bytes)} of --llm-overhead" if plan.overhead_bytes else ""
    rows = [
        ("its memory", f"{gib(p.bytes)} ({p.source})"),
        ("weights", f"{gib(fit.weight_bytes)} ({fit.weights_dtype})"),
        ("KV budget", f"{gib(fit.kv_budget_bytes)} (its memory less the weights{overhead})"),
        (
            "KV per token",
            f"{fit.kv_bytes_per_token / 1024:.1f} KiB ({fit.kv_dtype}), blocks of {fit.block_size} tokens",
        ),
        ("KV tokens", f"{fit.kv_tokens:,}"),
        (
            f"sequences of {fit.sequence_tokens}",
            f"{fit.sequences_by_kv:,} fit the KV cache; max_num_seqs {fit.max_num_seqs}: "
            f"{fit.concurrent_sequences:,} at once (max_model_len {fit.max_model_len})",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    title = f"LLM '{p.model}' version {p.version} ({p.instance}) on {p.device}, isl {plan.isl} + osl {plan.osl}:"
    return "\n".join([title, *(f"  {name:<{width}}  {value}" for name, value in rows)])


def _size(count: int) -> str:
    """As the server's messages write sizes (core's `gib`), with KiB and bytes for what is under a MiB."""
    if count >= 2**20 or count == 0:
        return gib(count)
    return f"{count / 1024:.0f} KiB" if count >= 1024 else f"{count} B"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
