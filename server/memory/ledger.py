"""The memory ledger: what each model instance holds on each device, against each device's limit.

A load reserves before it starts (the instance's declared size, else what it measured at its last load,
else an estimate from its files) and is refused when that does not fit, with a message saying what it
needs, what is free where, and who holds the rest. While a version loads, the devices it uses are locked
against other loads, so the change in use across the load (and its warm-up) is what it cost: that
measured figure replaces the reservation (a declared size stays the floor) and is remembered for the
next load of the same version. Unloading releases it.

GPUs are always accounted. The host is accounted only under `--cpu-memory-limit`: host memory measured
while other loads run at once would be wrong, and serializing every CPU model's load costs start-up time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from modelgate.core.byte_sizes import parse_limit
from modelgate.core.errors import UnavailableError
from modelgate.core.memory_rules import refusal_message
from modelgate.server.memory.device_memory import DeviceMemory, MemoryDevice


class InsufficientMemoryError(UnavailableError):
    """A load that does not fit on the device it needs (`device`); refused before it starts."""

    def __init__(self, message: str, device: MemoryDevice):
        super().__init__(message)
        self.device = device


@dataclass(frozen=True)
class Holder:
    model: str
    version: int
    instance: str
    load: int  # which load of the version: a reload holds beside the version it replaces until the swap


@dataclass
class Holding:
    holder: Holder
    device: MemoryDevice
    bytes: int
    source: str  # "declared", "budget" (an LLM's carve-out), "measured", "estimated"
    floor: int = 0  # a declared size or budget: the measured figure never lowers the holding below it


class MemoryLedger:
    def __init__(self, memory: DeviceMemory, gpu_limit: str | None = None, cpu_limit: str | None = None):
        """Limits as `--gpu-memory-limit` / `--cpu-memory-limit` give them (bytes or a fraction of each device;
        ValueError for a bad one). Without a GPU limit a GPU's limit is its size; without a CPU limit the
        host is not accounted."""
        self.memory = memory
        self._devices = {(d.kind, d.id): d for d in memory.devices()}
        self._limits = {}
        for key, device in self._devices.items():
            spec = gpu_limit if device.kind == "GPU" else cpu_limit
            if device.kind == "GPU" or spec is not None:
                self._limits[key] = device.total_bytes if spec is None else parse_limit(spec, device.total_bytes)
        self._holdings: dict[Holder, Holding] = {}
        self._measured: dict[tuple[str, int, str], int] = {}  # (model, version, device kind) -> bytes per instance
        self._locks = {key: asyncio.Lock() for key in self._limits}

    # -- devices ---------------------------------------------------------------------------------------------

    def gpus(self) -> list[MemoryDevice]:
        return [d for d in self._devices.values() if d.kind == "GPU"]

    def tracked(self, kind: str, device_id: int) -> MemoryDevice | None:
        """The device if the ledger accounts for it (every GPU; the host under a CPU limit), else None."""
        key = (kind, device_id if kind == "GPU" else 0)
        return self._devices[key] if key in self._limits else None

    def limit(self, device: MemoryDevice) -> int:
        return self._limits[(device.kind, device.id)]

    def held(self, device: MemoryDevice) -> int:
        return sum(h.bytes for h in self._holdings.values() if h.device == device)

    def free(self, device: MemoryDevice) -> int:
        return self.limit(device) - self.held(device)

    def most_free_gpu(self) -> MemoryDevice | None:
        gpus = self.gpus()
        return max(gpus, key=lambda d: (self.free(d), -d.id)) if gpus else None

    # -- holdings --------------------------------------------------------------------------------------------

    def remembered(self, model: str, version: int, kind: str) -> int | None:
        """Bytes per instance that the last load of this version measured on a device of this kind."""
        return self._measured.get((model, version, kind))

    def reserve(self, holder: Holder, device: MemoryDevice, count: int, source: str, floor: int = 0) -> None:
        """Hold `count` bytes on `device` for `holder`; InsufficientMemoryError when they do not fit."""
        if count > self.free(device):
            raise InsufficientMemoryError(self.refusal(holder, device, count, source), device)
        self._holdings[holder] = Holding(holder, device, count, source, floor)

    def settle(self, holders: list[Holder], device: MemoryDevice, measured: int) -> None:
        """`measured` bytes, what loading `holders` on `device` cost, shared evenly among them."""
        if not holders:
            return
        each = max(measured, 0) // len(holders)
        for holder in holders:
            holding = self._holdings.get(holder)
            if holding is None:
                continue
            holding.bytes = max(each, holding.floor)
            holding.source = "measured" if each >= holding.floor else holding.source
            self._measured[(holder.model, holder.version, device.kind)] = each

    def release(self, holders: Iterable[Holder]) -> None:
        for holder in holders:
            self._holdings.pop(holder, None)

    def usage(self, holders: Iterable[Holder]) -> list[dict]:
        """Triton's MemoryUsage list of these holders (a loaded version's): bytes per device, GPUs then the host."""
        totals: dict[MemoryDevice, int] = {}
        for holder in holders:
            holding = self._holdings.get(holder)
            if holding is not None:
                totals[holding.device] = totals.get(holding.device, 0) + holding.bytes
        return [
            {"type": d.kind, "id": d.id, "byte_size": count}
            for d, count in sorted(totals.items(), key=lambda item: (item[0].kind != "GPU", item[0].id))
        ]

    def holdings(self, device: MemoryDevice | None = None) -> list[Holding]:
        return [h for h in self._holdings.values() if device is None or h.device == device]

    def refusal(self, holder: Holder, device: MemoryDevice, count: int, source: str) -> str:
        by_model: dict[str, int] = {}
        for holding in self.holdings(device):
            by_model[holding.holder.model] = by_model.get(holding.holder.model, 0) + holding.bytes
        others = {d.label: self.free(d) for d in self.gpus() if d != device and device.kind == "GPU"}
        who = f"model '{holder.model}' version {holder.version} ({holder.instance})"
        return refusal_message(
            who, device.label, count, source, self.free(device), self.limit(device), by_model, others
        )

    # -- measuring -------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def measuring(self, devices: Iterable[MemoryDevice]):
        """Hold the devices against other loads; yields a dict that maps each device to its use's change
        (filled on exit, read from a thread: NVML and /proc reads may take milliseconds)."""
        ordered = sorted(set(devices), key=lambda d: (d.kind, d.id))  # one order: two loads never deadlock
        async with contextlib.AsyncExitStack() as stack:
            for device in ordered:
                await stack.enter_async_context(self._locks[(device.kind, device.id)])
            before = await asyncio.to_thread(self._used, ordered)
            changes: dict[MemoryDevice, int] = {}
            yield changes
            after = await asyncio.to_thread(self._used, ordered)
            changes.update({d: after[d] - before[d] for d in ordered})

    def _used(self, devices: list[MemoryDevice]) -> dict[MemoryDevice, int]:
        return {d: self.memory.used_bytes(d) for d in devices}
