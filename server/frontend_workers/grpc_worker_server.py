"""A frontend worker's gRPC server: the server's gRPC port shared (SO_REUSEPORT), with the server's limits and TLS.

ModelStreamInfer serves the worker's LLM models here and sends the rest of the stream on (grpc_stream_split.py);
every other method of `inference.GRPCInferenceService` and `grpc.health.v1.Health` goes to the server whole
(grpc_forwarding.py), which stays the one authority on models, health and settings. A method neither serves
gets grpc's own UNIMPLEMENTED, as from the server.

grpc.aio here, not the server's threaded grpcio (server.py): nearly every call a worker takes is an await on
its channel to the server, which is grpc.aio's too, on the same loop; the threaded bridge would add a thread
hop each way.
"""

from __future__ import annotations

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2
from tritonclient.grpc import service_pb2

from modelgate.server.dataplane import Dataplane
from modelgate.server.frontend_workers.attached_models import AttachedModels
from modelgate.server.frontend_workers.grpc_forwarding import PrimaryChannel, forwarding_handlers
from modelgate.server.frontend_workers.grpc_stream_split import STREAM_METHOD, stream_split_handler
from modelgate.server.frontends.api_categories import GRPC_METHOD_CATEGORIES
from modelgate.server.frontends.api_restrictions import rules_by_endpoint
from modelgate.server.frontends.grpc.registration import register_service
from modelgate.server.frontends.grpc.server import add_port, server_options
from modelgate.server.settings import ServerSettings

_SERVICES = (
    service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
)


class WorkerGrpcServer:
    """Created anywhere; `start` runs on the worker's event loop."""

    def __init__(self, settings: ServerSettings, models: AttachedModels, dataplane: Dataplane, primary_socket: str):
        """`primary_socket`: where the server serves its gRPC service in plaintext (runtime.py)."""
        self.settings = settings
        self.models = models
        self.dataplane = dataplane
        self.primary = PrimaryChannel(primary_socket)
        self.server: grpc.aio.Server | None = None

    async def start(self, address: str, port: int) -> int:
        """Listen on the port the server holds (it must have bound it with port sharing on); returns the port."""
        self.server = grpc.aio.server(options=server_options(self.settings.grpc_max_input_size, share_port=True))
        rule = rules_by_endpoint(self.settings.grpc_restrictions(), GRPC_METHOD_CATEGORIES).get(STREAM_METHOD)
        local = {"ModelStreamInfer": stream_split_handler(self.models, self.dataplane, self.primary, rule)}
        for service in _SERVICES:
            # No rules: the server checks every call it is sent; the one served here checks its own (`rule`).
            register_service(self.server, service.full_name, forwarding_handlers(self.primary, service, local), {})
        bound = add_port(self.server, f"{address}:{port}", self.settings.grpc_tls())
        await self.server.start()
        return bound

    async def stop(self, grace_s: float) -> None:
        """Stop taking calls; those open get `grace_s` to finish, then are cancelled."""
        if self.server is not None:
            await self.server.stop(grace_s)
            self.server = None
        await self.primary.close()
