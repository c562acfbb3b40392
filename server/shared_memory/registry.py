"""The server's registered shared-memory regions, system and CUDA, by name (one namespace for both, as Triton's)."""

from __future__ import annotations

import asyncio

from modelgate.core.errors import AlreadyExistsError, InvalidArgumentError
from modelgate.server.shared_memory.cuda_region import CudaRegion, open_cuda_region
from modelgate.server.shared_memory.system_region import SystemRegion, open_system_region

Region = SystemRegion | CudaRegion


class SharedMemoryRegistry:
    """Register, look up, report and unregister regions. Unregistering drops the server's reference only: a request
    reading or writing the region at that moment finishes with it, and its memory is let go after that."""

    def __init__(self):
        self._regions: dict[str, Region] = {}

    def register_system(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self._check_free(name)
        self._regions[name] = open_system_region(name, key, offset, byte_size)

    async def register_cuda(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        """Opened on a thread (the first one starts CUDA in the server), registered on the loop."""
        self._check_free(name)
        region = await asyncio.to_thread(open_cuda_region, name, raw_handle, device_id, byte_size)
        self._check_free(name)
        self._regions[name] = region

    def region(self, name: str, where: str) -> Region:
        region = self._regions.get(name)
        if region is None:
            raise InvalidArgumentError(f"{where}: unable to find shared memory region: '{name}'")
        return region

    def status(self, kind: type[Region], name: str = "") -> list[dict]:
        """Every region of `kind` (name ""), or the one named; an unknown name is an error."""
        if name:
            region = self._regions.get(name)
            if not isinstance(region, kind):
                raise InvalidArgumentError(f"Unable to find {_kind_name(kind)} shared memory region: '{name}'")
            return [region.status()]
        return [r.status() for r in self._regions.values() if isinstance(r, kind)]

    def unregister(self, kind: type[Region], name: str = "") -> None:
        """Drop the region `name` of `kind`, or every region of `kind` when `name` is "". Unregistering a name that
        is not registered succeeds, as in Triton."""
        names = [name] if name else list(self._regions)
        for each in names:
            if isinstance(self._regions.get(each), kind):
                del self._regions[each]

    def _check_free(self, name: str) -> None:
        if not name:
            raise InvalidArgumentError("a shared memory region needs a name")
        if name in self._regions:
            raise AlreadyExistsError(f"shared memory region '{name}' already in manager")


def _kind_name(kind: type[Region]) -> str:
    return "system" if kind is SystemRegion else "CUDA"
