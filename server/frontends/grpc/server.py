"""The gRPC server: grpcio's threaded server for the transport, the servicer's work on the event loop.

`inference.GRPCInferenceService` (async servicer methods, service.py) runs on the server's event loop, as
the dataplane does; grpcio's threads do HTTP/2 and protobuf and hand each call to the loop through
`ThreadedServicer` (threaded_bridge.py). grpc.aio's per-call Cython/asyncio machinery took most of the loop's
time: on a 2-core VM (server on one core), unary ModelInfer of the python model add_sub went from 1,878 req/s
on grpc.aio to 3,519 (process isolation; Triton 2.51: 4,184), thread isolation from 2,254 to 2,445. Streams
cost more: each response crosses from the loop to its handler thread, which sends it and waits for grpc's
poller thread; tiny_llm streaming to 16 clients took 122-135 us of server CPU per token against grpc.aio's
87-106 us, at 0-11% fewer tok/s. `grpc.health.v1` is grpcio's sync HealthServicer, served by the same threads.

Calls of the inference service skip the handler thread (loop_calls.py): grpc's polling thread hands each
request's bytes to the loop, which starts the sends and the status itself. A handler thread per unary call
cost two thread wake-ups and grpcio's per-call Python; without it, add_sub ModelInfer (process isolation,
server on one core, 16 clients) went from 5.4-12.6 context switches per call to 1.6-4.6, and server plus stub
CPU per call fell by a median of 50 us (24 A/B pairs on a shared 2-core VM: server -58 us, stub +10 us, as the
stub now wakes for fewer requests at a time; benchmarks/results/python_backend_grpc_ab_session20.log). A
ModelStreamInfer stream no longer holds a handler and a reader thread: tiny_llm streaming to 64 clients went
from 121-185 us of server CPU per token to 67-76 us (loop_stream.py; most of the rest is grpc core's sendmsg
per message). Restricted methods (--grpc-restricted-protocol) keep the handler thread, which checks their
metadata first.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer
from tritonclient.grpc import service_pb2

from modelgate.server.dataplane import Dataplane
from modelgate.server.frontends.api_categories import GRPC_METHOD_CATEGORIES, HEALTH_SERVICE, INFERENCE_SERVICE
from modelgate.server.frontends.api_restrictions import HeaderRule, rules_by_endpoint
from modelgate.server.frontends.grpc import loop_calls
from modelgate.server.frontends.grpc.decoding_handlers import add_decoding_servicer
from modelgate.server.frontends.grpc.loop_calls import LoopCalls
from modelgate.server.frontends.grpc.registration import register_service, servicer_handlers
from modelgate.server.frontends.grpc.service import InferenceService
from modelgate.server.frontends.grpc.threaded_bridge import ThreadedServicer
from modelgate.server.frontends.tls import TlsFiles
from modelgate.server.log_settings import LogSettings
from modelgate.server.settings import MAX_GRPC_MESSAGE_BYTES

# Responses as large as Triton's (INT32_MAX): a tensor is as large as the model makes it.
MAX_MESSAGE_BYTES = MAX_GRPC_MESSAGE_BYTES
# A handler thread is held for a whole call: a unary call only while the loop works on it, but a
# ModelStreamInfer stream (an LLM generation, a decoupled model) for its lifetime, plus a reader thread
# of its own. A small pool would queue new calls, health checks included, behind open streams, so the
# pools are large and grpc's maximum_concurrent_rpcs stays unlimited, as with grpc.aio: ThreadPoolExecutor
# starts threads lazily (one per call in flight at the peak), and an idle thread costs only its stack.
MAX_HANDLER_THREADS = 1024
MAX_STREAM_READER_THREADS = 1024


class GrpcFrontend:
    """Created anywhere; `start` must run on the event loop that serves the calls (the dataplane's)."""

    def __init__(
        self,
        dataplane: Dataplane,
        log_settings: LogSettings,
        observe_request_bytes: Callable[[int], None] | None = None,
        max_input_size: int = MAX_MESSAGE_BYTES,
        restrictions: Mapping[str, HeaderRule] | None = None,
        tls: TlsFiles | None = None,
        share_port: bool = False,
    ):
        """`max_input_size`: the largest request message (--grpc-max-input-size); larger ones end their RPC
        with RESOURCE_EXHAUSTED before the handler runs (grpc's own check and message). `restrictions`:
        restricted category -> the metadata it needs (--grpc-restricted-protocol). `tls`: serve TLS only.
        `share_port`: frontend workers listen on the same port (SO_REUSEPORT, --http-workers)."""
        self.max_input_size = max_input_size
        self.share_port = share_port
        self.rules = rules_by_endpoint(restrictions or {}, GRPC_METHOD_CATEGORIES)
        self.tls = tls
        self.service = InferenceService(dataplane, log_settings)
        self.observe_request_bytes = observe_request_bytes
        self.server: grpc.Server | None = None
        self.health: HealthServicer | None = None
        self._pools: list[ThreadPoolExecutor] = []

    async def start(self, address: str, port: int, local_socket: str | None = None) -> int:
        """Listen on address:port (0 picks a free port) and return the port; `local_socket`: a Unix socket path
        to serve on too, in plaintext (frontend workers forward there; its directory keeps others out)."""
        handler_pool = ThreadPoolExecutor(
            MAX_HANDLER_THREADS, thread_name_prefix="grpc-handler", initializer=batch_scheduling
        )
        reader_pool = ThreadPoolExecutor(
            MAX_STREAM_READER_THREADS, thread_name_prefix="grpc-stream-reader", initializer=batch_scheduling
        )
        self._pools = [handler_pool, reader_pool]
        self.server = grpc.server(
            handler_pool, options=server_options(self.max_input_size, self.share_port), maximum_concurrent_rpcs=None
        )
        loop = asyncio.get_running_loop()
        servicer = ThreadedServicer(self.service, loop, reader_pool)
        calls_on_loop = LoopCalls(loop, handler_pool) if loop_calls.SUPPORTED else None
        # Requests decoded by the handlers: a message protobuf cannot decode gets INVALID_ARGUMENT.
        sized = {}
        if self.observe_request_bytes is not None:
            sized = {"ModelInfer": self.observe_request_bytes, "ModelStreamInfer": self.observe_request_bytes}
        add_decoding_servicer(
            servicer, self.server, service_pb2, "GRPCInferenceService", self.rules, sized, calls_on_loop
        )
        self.health = HealthServicer()
        register_service(self.server, HEALTH_SERVICE, servicer_handlers(self.health, health_pb2, "Health"), self.rules)
        bound = add_port(self.server, f"{address}:{port}", self.tls)
        if local_socket is not None:
            self.server.add_insecure_port(f"unix:{local_socket}")
        threads_before = set(threading.enumerate())
        self.server.start()
        # grpc's polling thread (started by `start`) delivers each request to the loop: see batch_scheduling.
        for thread in set(threading.enumerate()) - threads_before:
            batch_scheduling(thread.native_id)
        return bound

    async def set_serving(self, is_serving: bool) -> None:
        if self.health is None:
            return
        status = health_pb2.HealthCheckResponse.SERVING if is_serving else health_pb2.HealthCheckResponse.NOT_SERVING
        # Off the loop: with Watch calls open, HealthServicer.set waits for their sends.
        await asyncio.to_thread(self._set_status, self.health, status)

    async def stop(self, grace_secs: float) -> None:
        """Stop taking calls, let those open finish for `grace_secs`, then cancel them (their work on the
        loop is cancelled with them). Waits on a thread: the loop must go on serving the calls that finish."""
        if self.server is None:
            return
        server, self.server = self.server, None
        await asyncio.to_thread(_stop_and_wait, server, grace_secs, self._pools)

    @staticmethod
    def _set_status(health: HealthServicer, status) -> None:
        for service in ("", INFERENCE_SERVICE):
            health.set(service, status)


def server_options(max_input_size: int, share_port: bool) -> list[tuple[str, int]]:
    """grpc's options for a server of the gRPC port: the server's and its frontend workers' (the same limits)."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", max_input_size),
        # grpc sets SO_REUSEPORT by default: a second server on a taken port would start and silently split
        # the clients with the first. Triton's --reuse-grpc-port is off too. Only the server's own frontend
        # workers share it (--http-workers), and they start after the server holds the port.
        ("grpc.so_reuseport", int(share_port)),
    ]


def add_port(server: grpc.Server | grpc.aio.Server, target: str, tls: TlsFiles | None) -> int:
    """Listen on `target` (plaintext, or TLS only when `tls`) and return the port bound."""
    if tls is None:
        return server.add_insecure_port(target)
    chain, key, root = tls.read()
    credentials = grpc.ssl_server_credentials([(key, chain)], root_certificates=root, require_client_auth=tls.mutual)
    return server.add_secure_port(target, credentials)


def batch_scheduling(thread_id: int | None = 0) -> None:
    """SCHED_BATCH for a thread (Linux; 0: the calling one): for the pools' threads and grpc's polling thread,
    as for python-model stubs. A thread the loop wakes (a stream's response to send, a unary result) no
    longer preempts the loop at once on a shared core; it runs when the loop waits or its time slice ends.
    Otherwise each unary call and each streamed token cost the loop two thread switches. Server on one core:
    add_sub unary (process isolation) 2,794 req/s with the normal policy, 3,519 with SCHED_BATCH; tiny_llm
    streaming to 16 clients 2,268 tok/s and 140 us of server CPU per token normal, ~2,410 tok/s and 122-135 us
    batch. grpc's polling thread, which hands unary requests to the loop (loop_unary.py), with the normal
    policy took 3.8 involuntary switches per add_sub call against 1.4 batch."""
    if thread_id is None:
        return
    try:
        os.sched_setscheduler(thread_id, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # no SCHED_BATCH here: the threads keep the normal policy
        pass


def _stop_and_wait(server: grpc.Server, grace_secs: float, pools: list[ThreadPoolExecutor]) -> None:
    server.stop(grace_secs).wait()
    for pool in pools:
        pool.shutdown(wait=False)  # idle threads exit; a late one finishes its call first
