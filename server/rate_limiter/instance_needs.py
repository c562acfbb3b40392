"""What an instance group's `rate_limiter` asks for, read from the model config, and its checks at load.

Resource names are case-insensitive (kept lower-cased), as Triton's `--rate-limit-resource` values are. A
resource is per-device unless `global: true`; a name cannot be both within one model's config. Priority 0 is
priority 1, as Triton documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError


@dataclass(frozen=True)
class InstanceNeeds:
    """The resources one execution of an instance holds while it runs, and its scheduling weight."""

    per_device: dict[str, int] = field(default_factory=dict)  # name (lower case) -> count, on its own device
    shared: dict[str, int] = field(default_factory=dict)  # global resources: name -> count
    priority: int = 1  # weight: priority 2 gets half the scheduling chances of priority 1

    @property
    def is_limited(self) -> bool:
        """Whether executions wait for resources at all (an instance that lists none never waits)."""
        return bool(self.per_device or self.shared)


def needs_by_group(config: ModelConfig) -> dict[str, InstanceNeeds]:
    """Instance group name -> what each of its instances needs (an unnamed group has none yet: the name is
    completed before load)."""
    return {group.name: _group_needs(group) for group in config.instance_group}


def instance_group_name(instance_name: str) -> str:
    """The group of an instance named `<group>_<k>` (loaded_model.instance_specs names them so)."""
    return instance_name.rpartition("_")[0]


def check_rate_limiter_fields(config: ModelConfig, source: str) -> None:
    """ConfigError naming the field: an empty or repeated resource name in one group, or a name that is global
    in one place and per-device in another."""
    scope_of: dict[str, tuple[bool, str]] = {}
    for group_index, group in enumerate(config.instance_group):
        seen: set[str] = set()
        for index, resource in enumerate(group.rate_limiter.resources):
            where = f"instance_group[{group_index}].rate_limiter.resources[{index}]"
            name = resource.name.strip().lower()
            if not name:
                raise ConfigError(source, f"{where}.name", 'is required (the resource\'s name, e.g. "R1")')
            if name in seen:
                raise ConfigError(source, f"{where}.name", f"'{resource.name}' is listed twice in this rate_limiter")
            seen.add(name)
            is_global = getattr(resource, "global")
            earlier = scope_of.setdefault(name, (is_global, where))
            if earlier[0] != is_global:
                raise ConfigError(
                    source,
                    f"{where}.global",
                    f'resource "{resource.name}" is present as both global and device-specific resource in the '
                    f"model configuration (see {earlier[1]}); a resource is either global or per device",
                )


def _group_needs(group) -> InstanceNeeds:
    per_device: dict[str, int] = {}
    shared: dict[str, int] = {}
    for resource in group.rate_limiter.resources:
        if resource.count == 0:  # needs none of it: nothing to wait for
            continue
        target = shared if getattr(resource, "global") else per_device
        target[resource.name.strip().lower()] = resource.count
    return InstanceNeeds(per_device, shared, max(1, group.rate_limiter.priority))
