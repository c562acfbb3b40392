"""Triton's shared-memory extension over gRPC: register, status and unregister system and CUDA regions."""

from __future__ import annotations

from tritonclient.grpc import service_pb2

from modelgate.server.frontends.grpc.rpc_errors import aborting_on_errors
from modelgate.server.shared_memory.cuda_region import CudaRegion
from modelgate.server.shared_memory.system_region import SystemRegion


class SharedMemoryRpcs:
    """Mixed into the inference servicer, whose `dataplane` it uses."""

    @aborting_on_errors
    async def SystemSharedMemoryStatus(self, request, context):
        response = service_pb2.SystemSharedMemoryStatusResponse()
        for status in self.dataplane.shared_memory.status(SystemRegion, request.name):
            response.regions[status["name"]].CopyFrom(
                service_pb2.SystemSharedMemoryStatusResponse.RegionStatus(**status)
            )
        return response

    @aborting_on_errors
    async def SystemSharedMemoryRegister(self, request, context):
        self.dataplane.shared_memory.register_system(request.name, request.key, request.offset, request.byte_size)
        return service_pb2.SystemSharedMemoryRegisterResponse()

    @aborting_on_errors
    async def SystemSharedMemoryUnregister(self, request, context):
        self.dataplane.shared_memory.unregister(SystemRegion, request.name)
        return service_pb2.SystemSharedMemoryUnregisterResponse()

    @aborting_on_errors
    async def CudaSharedMemoryStatus(self, request, context):
        response = service_pb2.CudaSharedMemoryStatusResponse()
        for status in self.dataplane.shared_memory.status(CudaRegion, request.name):
            response.regions[status["name"]].CopyFrom(service_pb2.CudaSharedMemoryStatusResponse.RegionStatus(**status))
        return response

    @aborting_on_errors
    async def CudaSharedMemoryRegister(self, request, context):
        registry = self.dataplane.shared_memory
        await registry.register_cuda(request.name, request.raw_handle, request.device_id, request.byte_size)
        return service_pb2.CudaSharedMemoryRegisterResponse()

    @aborting_on_errors
    async def CudaSharedMemoryUnregister(self, request, context):
        self.dataplane.shared_memory.unregister(CudaRegion, request.name)
        return service_pb2.CudaSharedMemoryUnregisterResponse()
