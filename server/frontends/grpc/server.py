"""The grpc.aio server: the inference service and `grpc.health.v1`, on the server's event loop."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from tritonclient.grpc import service_pb2_grpc

from modelgate.server.dataplane import Dataplane
from modelgate.server.frontends.grpc.service import InferenceService
from modelgate.server.log_settings import LogSettings

# As large as Triton's (INT32_MAX): a tensor is as large as the client sends.
MAX_MESSAGE_BYTES = 2**31 - 1
SERVICE_NAME = "inference.GRPCInferenceService"


class GrpcFrontend:
    """Created anywhere; `start` must run on the event loop that will serve it (grpc.aio binds to it)."""

    def __init__(self, dataplane: Dataplane, log_settings: LogSettings):
        self.service = InferenceService(dataplane, log_settings)
        self.server: grpc.aio.Server | None = None
        self.health: HealthServicer | None = None

    async def start(self, address: str, port: int) -> int:
        """Listen on address:port (0 picks a free port) and return the port."""
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # grpc sets SO_REUSEPORT by default: a second server on a taken port would start
                # and silently split the clients with the first. Triton's --reuse-grpc-port is off too.
                ("grpc.so_reuseport", 0),
            ]
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.service, self.server)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        bound = self.server.add_insecure_port(f"{address}:{port}")
        await self.server.start()
        return bound

    async def set_serving(self, is_serving: bool) -> None:
        if self.health is None:
            return
        status = health_pb2.HealthCheckResponse.SERVING if is_serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self, grace_secs: float) -> None:
        if self.server is not None:
            await self.server.stop(grace_secs)
