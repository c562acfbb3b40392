"""A model's entry in the model manager: its versions' states and the versions it serves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from modelgate.server.loaded_model import LoadedVersion


class ModelState(str, Enum):
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


@dataclass
class VersionStatus:
    state: ModelState
    reason: str = ""


@dataclass
class ModelEntry:
    name: str
    statuses: dict[int, VersionStatus] = field(default_factory=dict)
    serving: dict[int, LoadedVersion] = field(default_factory=dict)
    model_reason: str = ""  # a model-level failure (bad config) when no version status applies
    fingerprint: str = ""
    override_dir: Path | None = None  # files from a load request, deleted on unload
    stopped_instances: dict[int, dict[str, str]] = field(default_factory=dict)  # version -> instance -> why
    wanted: bool = True  # asked to serve (loaded last, not unloaded since): counts for the server's readiness
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
